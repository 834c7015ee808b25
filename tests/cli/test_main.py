"""The CLI's error contract: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys
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


def test_the_command_index_matches_the_modules() -> None:
    """``casemate --help`` lists every command without importing it: its one-line help must
    be each module's own, and the full app must have exactly these commands."""
    import typer

    from casemate.cli import main

    for name in main.COMMANDS:
        target = main._load(name)
        if isinstance(target, typer.Typer):
            own = (target.info.help or "").split("\n")[0]
        else:
            own = (target.__doc__ or "").strip().split("\n")[0]
        assert own.rstrip(".") == main.COMMANDS[name][2].rstrip("."), name
    full = typer.main.get_command(main._full_app())
    index = typer.main.get_command(main._index_app())
    assert sorted(full.commands) == sorted(index.commands)  # type: ignore[attr-defined]


def test_help_and_client_commands_load_no_server_code(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from casemate.cli import main\n"
        "for args in (['--help'], ['login', '--help'], ['exec', '--help']):\n"
        "    sys.argv = ['casemate', *args]\n"
        "    try:\n"
        "        main.main()\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (args, e.code)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('sqlalchemy', 'fastapi', 'starlette', 'uvicorn', 'httpx', 'websockets'))\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("user", "list", "--help", data_dir=tmp_path)
    assert r.returncode == 0 and "List users" in r.stdout
    r = run_cli("no-such-command", data_dir=tmp_path)
    assert r.returncode == 2 and "No such command" in r.stderr


def test_first_hour_messages_are_one_line(tmp_path: Path) -> None:
    r = run_cli("serve", "--listen", "127.0.0.1:99999", data_dir=tmp_path / "d")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "port 99999 is out of range (0 to 65535)" in r.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = run_cli("serve", data_dir=blocker / "data")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot create the data directory {blocker / 'data'}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_audit_search_takes_kind_as_the_records_call_it(tmp_path: Path) -> None:
    from casemate.core.runtime import open_runtime
    from casemate.core.settings import load_settings

    data = tmp_path / "data"
    settings = load_settings(data_dir=data, admin_password="correct-horse-battery-staple-42")
    rt = open_runtime(settings, create=True)
    rt.identity.ensure_first_admin(settings)
    rt.close()
    r = run_cli("audit", "search", "--kind", "identity.*", "--json", data_dir=data)
    assert r.returncode == 0, r.stderr
    assert '"kind": "identity.user"' in r.stdout or '"kind":"identity.user"' in r.stdout, r.stdout
    r2 = run_cli("audit", "search", "--type", "identity.*", "--json", data_dir=data)
    assert r2.stdout == r.stdout
