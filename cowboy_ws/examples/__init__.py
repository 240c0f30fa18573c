"""Example handlers: echo (the CLI default), chat (process groups), clock (send_after), subprotocol."""
