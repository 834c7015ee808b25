"""The wire layer: HTTP mechanisms both proxies (``kubeproxy`` and ``edge``) share, below them.

* :mod:`~casemate.wire.head`: the strict, sans-io request head scanner with per-peer rules;
* :mod:`~casemate.wire.response`: sans-io framing of the answers sent to clients;
* :mod:`~casemate.wire.upstream`: a small HTTP/1.1 client with a connection pool (h11 inside);
* :mod:`~casemate.wire.pipe`: the byte pipe of upgraded connections.

The parsers do no I/O; the upstream client and the pipe are thin asyncio drivers.
"""
