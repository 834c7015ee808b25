"""Content-addressed storage of what bastion commands read and print (migration 0009).

Applied manifests (the workspace files a command reads with ``-f``/``-k``/chart paths) and
command output are kept by SHA-256 in the ``bastion_artifacts`` table; audit records name them
by digest, so the same manifest applied a hundred times is stored once. Output is capped
(:data:`MAX_OUTPUT_BYTES`) and the row says how large the whole was; the digest in the audit
record is over the whole output, the stored copy is the first bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from sqlalchemy import BigInteger, Boolean, LargeBinary, String
from sqlalchemy.exc import IntegrityError as SAIntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from casemate.core.db import Base, Database, UtcDateTime
from casemate.errors import InvalidInput, NotFound

__all__ = ["MAX_MANIFEST_BYTES", "MAX_OUTPUT_BYTES", "Artifact", "ArtifactStore", "StoredArtifact"]

MAX_OUTPUT_BYTES: Final = 1024 * 1024
MAX_MANIFEST_BYTES: Final = 8 * 1024 * 1024
_KINDS: Final = frozenset({"manifest", "output"})


class Artifact(Base):
    __tablename__ = "bastion_artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    kind: str
    size: int
    truncated: bool
    data: bytes


class ArtifactStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(
        self,
        data: bytes,
        kind: str,
        *,
        digest: str | None = None,
        size: int | None = None,
        cap: int | None = None,
        session: Session | None = None,
    ) -> str:
        """Store ``data`` (at most ``cap`` bytes of it) under its SHA-256 (or ``digest``/
        ``size`` of the whole when ``data`` is already a prefix); returns the digest. With
        ``session`` the row is added in the caller's transaction."""
        if kind not in _KINDS:
            raise InvalidInput(f"unknown artifact kind {kind!r}")
        limit = (
            cap
            if cap is not None
            else (MAX_OUTPUT_BYTES if kind == "output" else MAX_MANIFEST_BYTES)
        )
        whole = size if size is not None else len(data)
        sha = digest or hashlib.sha256(data).hexdigest()
        kept = data[:limit]
        truncated = whole > len(kept)

        def row() -> Artifact:
            return Artifact(
                sha256=sha,
                kind=kind,
                size=whole,
                truncated=truncated,
                data=kept,
                created_at=datetime.now(UTC),
            )

        if session is not None:
            if session.get(Artifact, sha) is None:
                session.add(row())
                session.flush()
            return sha
        with self.db.reader() as s:
            if s.get(Artifact, sha) is not None:
                return sha
        try:
            with self.db.session() as s:
                if s.get(Artifact, sha) is None:
                    s.add(row())
        except SAIntegrityError:  # stored concurrently: same content
            pass
        return sha

    def get(self, sha256: str) -> StoredArtifact:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise InvalidInput("an artifact is named by its lowercase hex SHA-256")
        with self.db.reader() as s:
            row = s.get(Artifact, sha256)
            if row is None:
                raise NotFound(f"no stored artifact {sha256[:12]}…")
            return StoredArtifact(row.sha256, row.kind, row.size, row.truncated, bytes(row.data))
