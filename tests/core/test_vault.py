from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from casemate.core.db import Database
from casemate.core.models import VaultDataKey, VaultSecret
from casemate.core.vault import Keyring, MasterKey, Vault, open_keyring, rotate_key_file
from casemate.errors import ConfigError, IntegrityError, NotFound

SECRET = b"sa-token-eyJhbGciOiJSUzI1NiJ9.very-secret-value-4f1c2"


def make_vault(db: Database, tmp_path: Path) -> Vault:
    return Vault(db, Keyring.from_file(tmp_path / "master.key", create=True))


def test_round_trip_and_purpose_binding(db: Database, tmp_path: Path) -> None:
    vault = make_vault(db, tmp_path)
    with db.session() as s:
        sid = vault.put(s, "cluster:1:token", SECRET)
    with db.session() as s:
        assert vault.get(s, sid, "cluster:1:token") == SECRET
        with pytest.raises(IntegrityError):
            vault.get(s, sid, "cluster:2:token")
        with pytest.raises(NotFound):
            vault.get(s, sid + 1000, "cluster:1:token")


def test_ciphertext_moved_to_other_purpose_fails(db: Database, tmp_path: Path) -> None:
    vault = make_vault(db, tmp_path)
    with db.session() as s:
        a = vault.put(s, "a", b"first")
        vault.put(s, "b", b"second")
    with db.session() as s:
        # An attacker with database access relabels a row: AES-GCM's associated data catches it.
        s.execute(text("UPDATE vault_secrets SET purpose = 'b' WHERE id = :i"), {"i": a})
    with db.session() as s, pytest.raises(IntegrityError, match="failed authentication"):
        vault.get(s, a, "b")


def test_tampered_ciphertext_fails(db: Database, tmp_path: Path) -> None:
    vault = make_vault(db, tmp_path)
    with db.session() as s:
        sid = vault.put(s, "p", SECRET)
    with db.session() as s:
        row = s.get(VaultSecret, sid)
        assert row is not None
        row.ciphertext = bytes([row.ciphertext[0] ^ 1]) + row.ciphertext[1:]
    with db.session() as s, pytest.raises(IntegrityError):
        vault.get(s, sid, "p")


def test_wrong_master_key_cannot_read(db: Database, tmp_path: Path) -> None:
    vault = make_vault(db, tmp_path)
    with db.session() as s:
        sid = vault.put(s, "p", SECRET)
    other = Vault(db, Keyring([MasterKey.generate()], source=None))
    with db.session() as s, pytest.raises(IntegrityError, match="not loaded"):
        other.get(s, sid, "p")


def test_replace_and_delete(db: Database, tmp_path: Path) -> None:
    vault = make_vault(db, tmp_path)
    with db.session() as s:
        sid = vault.put(s, "p", b"one")
    with db.session() as s:
        vault.replace(s, sid, "p", b"two")
    with db.session() as s:
        assert vault.get(s, sid, "p") == b"two"
        assert len(s.scalars(select(VaultDataKey)).all()) == 1
        vault.delete(s, sid)
    with db.session() as s:
        assert s.scalars(select(VaultDataKey)).all() == []


def test_sqlite_file_never_holds_plaintext(tmp_path: Path) -> None:
    db = Database.open(f"sqlite:///{tmp_path / 'c.db'}")
    vault = make_vault(db, tmp_path)
    with db.session() as s:
        for i in range(20):
            vault.put(s, f"p{i}", SECRET)
    db.dispose()  # checkpoints the WAL into the main file
    for f in tmp_path.iterdir():
        if f.name.startswith("c.db"):
            assert SECRET not in f.read_bytes(), f.name
            assert SECRET[:24] not in f.read_bytes(), f.name


def test_key_file_created_0600_and_refused_when_open(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    ring = Keyring.from_file(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Keyring.from_file(path, create=False).primary.id == ring.primary.id
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Keyring.from_file(path, create=False)
    assert Keyring.from_file(path, create=False, strict_mode=False).primary.id == ring.primary.id
    with pytest.raises(ConfigError, match="does not exist"):
        Keyring.from_file(tmp_path / "missing.key", create=False)


@pytest.mark.parametrize("bad", ["not-base64!!", "c2hvcnQ=", ""])
def test_bad_env_keys_are_clear_errors(bad: str) -> None:
    with pytest.raises(ConfigError) as e:
        open_keyring(bad or ",", Path("/nonexistent"), create=False, dev_mode=False)
    assert bad not in str(e.value) or not bad


def test_master_key_repr_hides_key() -> None:
    k = MasterKey.generate()
    assert k.encoded() not in repr(k)
    assert repr(k.key) not in repr(k)


def test_env_keyring_supports_rotation_list(db: Database, tmp_path: Path) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    with db.session() as s:
        sid = Vault(db, Keyring.from_env_value(old.encoded())).put(s, "p", SECRET)
    both = Vault(db, Keyring.from_env_value(f"{new.encoded()},{old.encoded()}"))
    assert both.rewrap_all() == 1
    only_new = Vault(db, Keyring.from_env_value(new.encoded()))
    with db.session() as s:
        assert only_new.get(s, sid, "p") == SECRET


def test_rotation_rewraps_everything_without_downtime(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    serving = make_vault(db, tmp_path)  # a running instance with the old key loaded
    ids = []
    with db.session() as s:
        ids = [serving.put(s, f"p{i}", SECRET + bytes([i])) for i in range(50)]
    old_id = serving.keyring.primary.id

    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_serving() -> None:
        # Reads and writes continue during the rotation and must never fail.
        i = 0
        while not stop.is_set():
            try:
                with db.session() as s:
                    assert serving.get(s, ids[i % 50], f"p{i % 50}") == SECRET + bytes([i % 50])
                    ids.append(serving.put(s, f"n{i}", b"during"))
            except BaseException as e:  # collected and asserted below
                errors.append(e)
                return
            i += 1

    worker = threading.Thread(target=keep_serving)
    worker.start()
    try:
        old, new, count = rotate_key_file(db, path, settle_seconds=0.5)
    finally:
        stop.set()
        worker.join()
    assert errors == []
    assert old == old_id and new != old
    assert count >= 50
    fresh = Vault(db, Keyring.from_file(path, create=False))
    assert fresh.keyring.ids == [new]
    with db.session() as s:
        kek_ids = set(s.scalars(select(VaultDataKey.kek_id)).all())
        assert kek_ids == {new}
        assert fresh.get(s, ids[7], "p7") == SECRET + bytes([7])
