from __future__ import annotations

from pathlib import Path

from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from tests.cli.conftest import cli_env, run_cli


def test_rotate_keeps_secrets_readable(tmp_path: Path) -> None:
    d = tmp_path / "data"
    rt = open_runtime(load_settings(data_dir=d), create=True)
    with rt.db.session() as s:
        sid = rt.vault.put(s, "test", b"cluster-token-value")
    old_id = rt.vault.keyring.primary.id
    rt.close()
    old_key_text = (d / "master.key").read_text()

    r = run_cli("vault", "rotate", data_dir=d)
    assert r.returncode == 0, r.stderr
    assert f"{old_id} ->" in r.stdout and "1 data keys re-wrapped" in r.stdout
    assert (d / "master.key").read_text() != old_key_text

    rt = open_runtime(load_settings(data_dir=d), create=False)
    try:
        with rt.db.session() as s:
            assert rt.vault.get(s, sid, "test") == b"cluster-token-value"
        kinds = [e.kind for e in rt.audit.query(kind="vault.rotated")]
        assert kinds == ["vault.rotated"]
    finally:
        rt.close()


def test_rotate_refuses_environment_key(tmp_path: Path) -> None:
    import base64
    import os

    d = tmp_path / "data"
    key = base64.b64encode(os.urandom(32)).decode()
    env = cli_env(d, CASEMATE_MASTER_KEY=key)
    open_runtime(load_settings(data_dir=d, master_key=key), create=True).close()
    r = run_cli("vault", "rotate", data_dir=d, env=env)
    assert r.returncode == 1 and "CASEMATE_MASTER_KEY" in r.stderr
    assert key not in r.stderr
