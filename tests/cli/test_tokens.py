from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from casemate.cli.tokens import parse_ttl
from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.errors import InvalidInput
from tests.cli.conftest import run_cli


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    rt = open_runtime(load_settings(data_dir=d), create=True)
    rt.identity.create_user("dana", by=None, password="maple-sunrise-anchor-88", roles=["operator"])
    rt.close()
    return d


def test_issue_list_revoke(data_dir: Path) -> None:
    r = run_cli("token", "issue", "-u", "dana", "--name", "ci", "-s", "read", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("cmt_") and "shown only now" in r.stderr
    listing = run_cli("token", "list", "-u", "dana", data_dir=data_dir).stdout
    assert "ci" in listing and token not in listing
    rt = open_runtime(load_settings(data_dir=data_dir), create=False)
    try:
        principal = rt.identity.resolve_token(token)
        assert principal.username == "dana"
        token_id = rt.identity.list_tokens("dana")[0].id
    finally:
        rt.close()
    assert run_cli("token", "revoke", str(token_id), data_dir=data_dir).returncode == 0
    assert "revoked" in run_cli("token", "list", "-u", "dana", data_dir=data_dir).stdout


def test_bad_scope_and_ttl(data_dir: Path) -> None:
    r = run_cli("token", "issue", "-u", "dana", "--name", "x", "-s", "root", data_dir=data_dir)
    assert r.returncode != 0 and "scope" in r.stderr
    r = run_cli(
        "token",
        "issue",
        "-u",
        "dana",
        "--name",
        "x",
        "-s",
        "read",
        "--ttl",
        "5y",
        data_dir=data_dir,
    )
    assert r.returncode == 2 and "--ttl" in r.stderr


def test_parse_ttl() -> None:
    assert parse_ttl("30d") == timedelta(days=30)
    assert parse_ttl("90m") == timedelta(minutes=90)
    assert parse_ttl("never") is None
    for bad in ("0d", "-1d", "1.5h", "", "d"):
        with pytest.raises(InvalidInput):
            parse_ttl(bad)
