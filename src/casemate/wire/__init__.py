"""The wire layer: HTTP mechanisms both proxies (``kubeproxy`` and ``edge``) share, below them.

* :mod:`~casemate.wire.head`: the strict, sans-io request head scanner with per-peer rules;
* :mod:`~casemate.wire.response`: sans-io framing of answers sent to clients, and reading of
  upstream answers;
* :mod:`~casemate.wire.upstream`: a small HTTP/1.1 client with a connection pool;
* :mod:`~casemate.wire.pipe`: the byte pipe of upgraded connections.

The parsers do no I/O; the upstream client and the pipe are thin asyncio drivers.
"""
