from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import run_cli

PASSWORD = "violet-harbor-compass-31"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    r = run_cli("user", "add", "root-admin", "--role", "admin", data_dir=d, stdin="")
    # a data directory must exist first: 'serve' creates it; here we create it by hand
    assert r.returncode == 1
    d.mkdir()
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings

    open_runtime(load_settings(data_dir=d), create=True).close()
    return d


def test_add_list_roles_disable_delete(data_dir: Path) -> None:
    r = run_cli(
        "user", "add", "alice", "--role", "operator", data_dir=data_dir, stdin=PASSWORD + "\n"
    )
    assert r.returncode == 0, r.stderr
    assert "created user alice (roles: operator)" in r.stdout
    listing = run_cli("user", "list", data_dir=data_dir).stdout
    assert "alice" in listing and "operator" in listing
    assert run_cli("user", "roles", "alice", "-r", "auditor", data_dir=data_dir).returncode == 0
    assert run_cli("user", "disable", "alice", data_dir=data_dir).returncode == 0
    assert "disabled" in run_cli("user", "list", data_dir=data_dir).stdout
    assert run_cli("user", "delete", "alice", data_dir=data_dir).returncode == 0
    assert "alice" not in run_cli("user", "list", data_dir=data_dir).stdout


def test_password_is_read_from_stdin_never_argv(data_dir: Path) -> None:
    r = run_cli("user", "add", "bob", data_dir=data_dir, stdin=PASSWORD + "\n")
    assert r.returncode == 0
    assert PASSWORD not in r.stdout + r.stderr
    r = run_cli("user", "passwd", "bob", data_dir=data_dir, stdin="short\n")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "short" not in r.stderr.replace("shorter", "")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("user", "add", "Bad Name", "--no-password"), "username"),
        (("user", "add", "x' OR 1=1 --", "--no-password"), "username"),
        (("user", "add", "eve", "--role", "god", "--no-password"), "role"),
        (("user", "delete", "ghost"), "ghost"),
        (("user", "unlock", "ghost"), "ghost"),
    ],
)
def test_bad_input_is_a_clear_error(data_dir: Path, args: tuple[str, ...], fragment: str) -> None:
    r = run_cli(*args, data_dir=data_dir)
    assert r.returncode != 0
    assert r.stderr.startswith("casemate: error:") and fragment in r.stderr
    assert "Traceback" not in r.stderr


def test_duplicate_user_is_a_conflict(data_dir: Path) -> None:
    assert run_cli("user", "add", "carl", "--no-password", data_dir=data_dir).returncode == 0
    r = run_cli("user", "add", "carl", "--no-password", data_dir=data_dir)
    assert r.returncode == 1 and "already exists" in r.stderr
