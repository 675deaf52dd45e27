"""The web viewer's protocol, sans-IO: HTTP/1.1 requests (h11), the WebSocket (wsproto), routes,
the page's security headers and the static assets, as bytes in and typed values or bytes out.

No socket, select or thread here (tests/test_structure.py): relay.conn.web moves the bytes in
the jailed web connection process.
"""
