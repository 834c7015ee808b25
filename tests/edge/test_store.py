"""The edge proxy's tables: uid mapping, allowlist, keys, signatures; migration; CLI."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

import casemate.edge.proxy_models  # noqa: F401 - registers the tables on Base.metadata
from casemate.core.db import Base, Database
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.edge import imagetrust as it
from casemate.edge.decide import Role
from casemate.edge.store import ProxyStore
from casemate.errors import Conflict, InvalidInput, NotFound
from casemate.risks import signatures as sig
from tests.risks.test_signatures import cosign_payload, new_key, pub_pem, sign

REPO = "registry.example/team/app"
DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    runtime = open_runtime(load_settings(data_dir=tmp_path / "data"), create=True)
    yield runtime
    runtime.close()


@pytest.fixture
def store(rt: Runtime) -> ProxyStore:
    return ProxyStore(rt.db, rt.audit)


def audit_actions(rt: Runtime) -> list[str]:
    return [e.details["action"] for e in rt.audit.query(kind="edge.proxy.config")]


def test_user_mapping(store: ProxyStore, rt: Runtime) -> None:
    assert store.user(1000) is None
    store.map_user(1000, "alice", "ordinary", by="test")
    store.map_user(0, "root-admin", Role.SUPER, by="test")
    assert store.user(1000) == store.list_users()[1]
    assert [(u.uid, u.username, u.role) for u in store.list_users()] == [
        (0, "root-admin", Role.SUPER),
        (1000, "alice", Role.ORDINARY),
    ]
    store.map_user(1000, "alice", "super", by="test")  # re-mapping replaces
    assert store.user(1000).role is Role.SUPER  # type: ignore[union-attr]
    assert store.snapshot().users[1000].role is Role.SUPER
    store.unmap_user(1000, by="test")
    assert store.user(1000) is None
    with pytest.raises(NotFound):
        store.unmap_user(1000, by="test")
    assert audit_actions(rt) == ["user_mapped", "user_mapped", "user_mapped", "user_unmapped"]
    [first, *_] = rt.audit.query(kind="edge.proxy.config")
    assert first.actor == "test" and first.details["changes"]["role"] == "ordinary"


@pytest.mark.parametrize(
    ("uid", "name", "role"),
    [(-1, "a", "super"), (2**32 - 1, "a", "super"), (1, "Bad Name", "super"), (1, "a", "root")],
)
def test_user_mapping_validation(store: ProxyStore, uid: int, name: str, role: str) -> None:
    with pytest.raises(InvalidInput):
        store.map_user(uid, name, role, by="test")


def test_image_allowlist(store: ProxyStore, rt: Runtime) -> None:
    policy = store.allow_image("nginx", [DIGEST], by="test")
    assert policy == it.ImagePolicy("docker.io/library/nginx", frozenset({DIGEST}))
    policy = store.allow_image("docker.io/library/nginx", [OTHER], by="test")
    assert policy.digests == {DIGEST, OTHER} and not policy.require_signature
    policy = store.allow_image("nginx", by="test", require_signature=True)
    assert policy.require_signature and policy.digests == {DIGEST, OTHER}
    assert store.allow_image("nginx", by="test").require_signature  # None keeps the flag
    store.remove_image("nginx", [OTHER], by="test")
    assert store.list_images() == [
        it.ImagePolicy("docker.io/library/nginx", frozenset({DIGEST}), True)
    ]
    with pytest.raises(NotFound):
        store.remove_image("nginx", [OTHER], by="test")
    store.remove_image("nginx", by="test")
    assert store.list_images() == []
    with pytest.raises(NotFound):
        store.remove_image("nginx", by="test")
    for bad_name, digests in (("nginx:1.0", []), ("nginx", ["sha256:abc"]), ("x", ["md5:1"])):
        with pytest.raises(InvalidInput):
            store.allow_image(bad_name, digests, by="test")
    assert "image_allowed" in audit_actions(rt) and "image_removed" in audit_actions(rt)


def test_keys(store: ProxyStore) -> None:
    key = new_key()
    info = store.add_key("release", pub_pem(key), by="test")
    assert info.fingerprint == sig.key_fingerprint(key.public_key())
    with pytest.raises(Conflict):
        store.add_key("release", pub_pem(new_key()), by="test")
    with pytest.raises(Conflict, match="already stored as 'release'"):
        store.add_key("copy", pub_pem(key), by="test")
    for bad in ("", " x", "x" * 101, "a\nb"):
        with pytest.raises(InvalidInput):
            store.add_key(bad, pub_pem(new_key()), by="test")
    with pytest.raises(sig.SignatureError):
        store.add_key("junk", b"not a key", by="test")
    assert [k.name for k in store.list_keys()] == ["release"]
    store.remove_key("release", by="test")
    assert store.list_keys() == []
    with pytest.raises(NotFound):
        store.remove_key("release", by="test")


def test_signatures(store: ProxyStore, rt: Runtime) -> None:
    key = new_key()
    payload = cosign_payload(REPO, DIGEST)
    signature = sign(key, payload)
    with pytest.raises(sig.SignatureError, match="no trusted key"):
        store.add_signature(REPO, payload, signature, by="test")
    store.add_key("release", pub_pem(key), by="test")
    with pytest.raises(sig.SignatureError, match="not for"):
        store.add_signature("registry.example/team/other", payload, signature, by="test")
    with pytest.raises(sig.SignatureError, match="not sha256"):
        store.add_signature(f"{REPO}@{OTHER}", payload, signature, by="test")
    with pytest.raises(InvalidInput):
        store.add_signature(DIGEST, payload, signature, by="test")
    info = store.add_signature(f"{REPO}:1.0", payload, (signature + "\n").encode(), by="test")
    assert (info.name, info.digest, info.key_name) == (REPO, DIGEST, "release")
    with pytest.raises(Conflict):
        store.add_signature(REPO, payload, signature, by="test")
    assert store.snapshot().trust.signed == {REPO: {DIGEST}}
    assert [s.id for s in store.list_signatures()] == [info.id]
    # Removing the key stops trusting its signatures at the next snapshot.
    store.remove_key("release", by="test")
    assert store.snapshot().trust.signed == {}
    store.remove_signature(info.id, by="test")
    assert store.list_signatures() == []
    with pytest.raises(NotFound):
        store.remove_signature(info.id, by="test")
    assert "signature_added" in audit_actions(rt)


def test_snapshot(store: ProxyStore) -> None:
    key = new_key()
    store.add_key("k", pub_pem(key), by="test")
    payload = cosign_payload(REPO, DIGEST)
    store.add_signature(REPO, payload, sign(key, payload), by="test")
    store.allow_image("nginx", [OTHER], by="test")
    store.map_user(5, "bob", "super", by="test")
    snap = store.snapshot()
    assert snap.users[5].username == "bob"
    assert snap.trust.allowlist.pinned == {"docker.io/library/nginx": {OTHER}}
    assert snap.trust.signed == {REPO: {DIGEST}}
    store.clear(by="test")
    empty = store.snapshot()
    assert not empty.users and not empty.trust.policies and not empty.trust.signed


_TABLES = ("edge_proxy_users", "edge_image_trust", "edge_cosign_keys", "edge_image_signatures")


def _ours(diff: Any) -> bool:
    return any(f"'{table}'" in repr(diff) for table in _TABLES)


def test_migration_matches_models(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if _ours(d)] == []
    finally:
        db.dispose()


@pytest.mark.pg
def test_store_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", database_url=postgres_url)
    runtime = open_runtime(settings, create=True)
    try:
        store = ProxyStore(runtime.db, runtime.audit)
        store.map_user(2**32 - 2, "big", "super", by="test")  # uids beyond 2**31 fit
        assert store.user(2**32 - 2) is not None
        with runtime.db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if _ours(d)] == []
    finally:
        runtime.close()


# CLI ------------------------------------------------------------------------------------------


def _cli(data_dir: Path, *args: str) -> Any:
    from casemate.cli.edge import app

    env = {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_")}
    env["CASEMATE_DATA_DIR"] = str(data_dir)
    env["COLUMNS"] = "250"
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=True)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "edge-data"
    runtime = open_runtime(load_settings(data_dir=directory), create=True)
    runtime.identity.create_user("alice", by=None, password=None, roles=[])
    runtime.close()
    return directory


def test_cli_users(data_dir: Path) -> None:
    r = _cli(data_dir, "user", "map", "1000", "alice", "--role", "super")
    assert r.exit_code == 0, r.output
    assert "uid 1000 is alice (super)" in r.output
    r = _cli(data_dir, "user", "map", "1001", "nobody-here")
    assert r.exit_code != 0 and isinstance(r.exception, NotFound)
    r = _cli(data_dir, "user", "map", "1000", "alice", "--role", "root")
    assert isinstance(r.exception, InvalidInput)
    r = _cli(data_dir, "user", "list")
    assert "1000" in r.output and "super" in r.output
    assert _cli(data_dir, "user", "unmap", "1000").exit_code == 0
    assert "1000" not in _cli(data_dir, "user", "list").output


def test_cli_images_keys_signatures(data_dir: Path, tmp_path: Path) -> None:
    r = _cli(data_dir, "image", "allow", "nginx", "--digest", DIGEST, "--digest", OTHER)
    assert r.exit_code == 0, r.output
    assert "docker.io/library/nginx: 2 digest(s)" in r.output
    r = _cli(data_dir, "image", "allow", "nginx", "--require-signature")
    assert "signature required" in r.output
    listing = _cli(data_dir, "image", "list").output
    assert DIGEST in listing and "required" in listing
    assert _cli(data_dir, "image", "remove", "nginx", "--digest", OTHER).exit_code == 0
    assert OTHER not in _cli(data_dir, "image", "list").output

    key = new_key()
    pem = tmp_path / "cosign.pub"
    pem.write_bytes(pub_pem(key))
    r = _cli(data_dir, "key", "add", "release", "--pem", str(pem))
    assert r.exit_code == 0 and "key release added (sha256:" in r.output, r.output
    assert "release" in _cli(data_dir, "key", "list").output
    r = _cli(data_dir, "key", "add", "x", "--pem", str(tmp_path / "missing.pub"))
    assert isinstance(r.exception, InvalidInput)

    payload = cosign_payload(REPO, DIGEST)
    (tmp_path / "payload.json").write_bytes(payload)
    (tmp_path / "payload.sig").write_text(sign(key, payload) + "\n")
    r = _cli(
        data_dir,
        "signature",
        "add",
        f"{REPO}:1.0",
        "--payload",
        str(tmp_path / "payload.json"),
        "--signature",
        str(tmp_path / "payload.sig"),
    )
    assert r.exit_code == 0, r.output
    assert f"for {REPO}@{DIGEST} (key release)" in r.output
    assert DIGEST in _cli(data_dir, "signature", "list").output
    (tmp_path / "bad.sig").write_text(sign(new_key(), payload))
    r = _cli(
        data_dir,
        "signature",
        "add",
        REPO,
        "--payload",
        str(tmp_path / "payload.json"),
        "--signature",
        str(tmp_path / "bad.sig"),
    )
    assert isinstance(r.exception, sig.SignatureError)
    assert _cli(data_dir, "signature", "remove", "1").exit_code == 0
    assert _cli(data_dir, "key", "remove", "release").exit_code == 0
    assert _cli(data_dir, "image", "remove", "nginx").exit_code == 0


def test_cli_parse_helpers() -> None:
    from casemate.edge.service import default_mac, parse_mode

    assert parse_mode("0660") == 0o660 and parse_mode("666") == 0o666
    for bad in ("0999", "rw", "06600"):
        with pytest.raises(InvalidInput):
            parse_mode(bad)
    assert len(default_mac()) == 17
