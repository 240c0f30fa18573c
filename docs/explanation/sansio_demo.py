# Two sans-IO connections talking through plain bytes: no socket, no thread, no clock.
from cowboy_ws.protocol.connection import Connection

client, server = Connection("client"), Connection("server")

client.send_text("hello")                    # queues a masked frame (RFC 6455 §5.3)
wire = client.data_to_send()                 # the bytes a socket would carry
assert server.receive_data(wire) == [("text", b"hello")]

server.send_text("hi back")
assert client.receive_data(server.data_to_send()) == [("text", b"hi back")]

client.send_close(1000)
assert server.receive_data(client.data_to_send()) == [("close", 1000, b"")]
echo = server.data_to_send()                 # the server's Close, echoing the code (§5.5.1)
assert client.receive_data(echo) == [("close", 1000, b"")]
assert client.state == server.state == "closed"

# A protocol error is an event too, with the close code to fail the connection with.
server = Connection("server")
events = server.receive_data(b"\x81\x05hello")  # a client frame without a mask
assert events[-1][0] == "error" and events[-1][1].code == 1002
