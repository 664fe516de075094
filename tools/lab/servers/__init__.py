"""Stdlib-only helper programs run inside test namespaces (see ../netns.py).

http_server.py  HTTP server for a member (GET /, GET /bytes/N, POST /upload)
udp_echo.py     UDP echo for a member ("member=<name> <payload>")
client.py       client side: get, upload, udp-probe (JSON output)

Each server prints READY (flushed) once every socket is bound.
"""
