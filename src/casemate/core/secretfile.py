"""Hand a secret (a private key, a client certificate) to an API that only takes a file path.

``ssl.SSLContext.load_cert_chain`` reads files; Casemate's keys live in the vault and must not
touch the disk. :func:`secret_file` gives a path to an anonymous in-memory file (``memfd``)
readable only by this process, closed when the block ends; where ``memfd_create`` is missing it
falls back to a 0600 file in a private temporary directory that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def secret_file(data: bytes, name: str = "casemate-secret") -> Iterator[str]:
    """A path holding ``data`` readable only by this process, gone after the block."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="casemate-") as tmp:  # pragma: no cover
        path = os.path.join(tmp, "secret.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        yield path
