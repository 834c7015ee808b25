"""Content-addressed artifacts: stored once, capped, read back; migration matches the model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from casemate.bastion.artifacts import ArtifactStore
from casemate.core.db import Base, Database
from casemate.errors import InvalidInput, NotFound


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database.open(f"sqlite:///{tmp_path / 'a.db'}")


def test_put_get_dedup_and_cap(db: Database) -> None:
    store = ArtifactStore(db)
    data = b"apiVersion: v1\nkind: ConfigMap\n"
    sha = store.put(data, "manifest")
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.put(data, "manifest") == sha
    got = store.get(sha)
    assert got.data == data and not got.truncated and got.size == len(data)
    big = b"x" * 100
    sha2 = store.put(big[:10], "output", digest=hashlib.sha256(big).hexdigest(), size=100)
    got2 = store.get(sha2)
    assert got2.truncated and got2.size == 100 and got2.data == b"x" * 10


def test_bad_names_and_kinds(db: Database) -> None:
    store = ArtifactStore(db)
    with pytest.raises(InvalidInput):
        store.get("../etc")
    with pytest.raises(NotFound):
        store.get("0" * 64)
    with pytest.raises(InvalidInput):
        store.put(b"", "other")


def _ours(diff: Any) -> bool:
    return "'bastion_artifacts'" in repr(diff)


def test_migration_matches_model(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if _ours(d)] == []
