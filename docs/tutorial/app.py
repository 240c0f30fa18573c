# app.py: the same handler served from Python, with Cowboy-style routes.
import cowboy_ws

import hello

routes = [
    ("/", hello, None),  # (path pattern, handler, initial state); other paths get 404
]

if __name__ == "__main__":
    server = cowboy_ws.Server(routes, host="127.0.0.1", port=8080)
    print("listening on", server.url)
    server.serve_forever()  # Ctrl-C: Close 1001 to every connection, then KeyboardInterrupt
