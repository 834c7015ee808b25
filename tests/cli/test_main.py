"""The CLI's error contract: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import run_cli


def test_missing_data_dir_is_one_line(tmp_path: Path) -> None:
    r = run_cli("user", "list", data_dir=tmp_path / "nope")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"casemate: error: data directory {tmp_path / 'nope'} does not exist (use --data-dir)"
    ]


def test_data_dir_without_database(tmp_path: Path) -> None:
    r = run_cli("audit", "verify", data_dir=tmp_path)
    assert r.returncode == 1 and "holds no Casemate database" in r.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (("user", "add"), ("no-such-command",), ("token", "issue", "--user", "x")):
        r = run_cli(*args, data_dir=tmp_path)
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr


def test_version(tmp_path: Path) -> None:
    from casemate import __version__

    assert run_cli("version", data_dir=tmp_path).stdout.strip() == __version__
