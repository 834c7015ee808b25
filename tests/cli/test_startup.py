"""CLI start-up guard: ``--help`` of the client commands and of the admin commands made lazy
(and every remote admin command's parser) loads no storage or server code — those imports
take most of a second (bench/cli.py measures the times; this test only checks what loads)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# pydantic: typer coerces an unset --help through a pydantic adapter unless main() gives it a
# default (cli.main._help_off); a quarter of the start-up of `casemate X Y --help`
HEAVY = (
    "sqlalchemy", "alembic", "psycopg", "fastapi", "starlette", "uvicorn", "bashlex", "pydantic",
)  # fmt: skip
HEAVY_OURS = ("casemate.core.runtime", "casemate.core.db", "casemate.core.audit", "casemate.server")

LIGHT_HELP = [
    ["--help"],
    ["login", "--help"],
    ["exec", "--help"],
    ["session", "list", "--help"],
    ["user", "--help"],
    ["user", "add", "--help"],
    ["user", "ssh-key", "add", "--help"],
    ["token", "--help"],
    ["vault", "--help"],
    ["doctor", "--help"],
    ["cluster", "--help"],
    ["cluster", "account", "provision", "--help"],
    ["grant", "add", "--help"],
    ["serve", "--help"],
    ["demo", "up", "--help"],
    ["audit", "--help"],
    ["audit", "search", "--help"],
    ["review", "--help"],
    ["review", "approve", "--help"],
    ["recording", "--help"],
    ["recording", "play", "--help"],
    ["policy", "--help"],
    ["policy", "test", "--help"],
    ["edge", "--help"],
    ["edge", "serve", "--help"],
    ["cloud", "--help"],
    ["cloud", "rule", "add", "--help"],
    ["posture", "--help"],
    ["posture", "scan", "--help"],
    ["posture", "watch", "--help"],
    ["posture", "fix", "--help"],
    ["admission", "--help"],
    ["vuln", "--help"],
    ["vuln", "scan", "--help"],
    ["--server", "https://gateway.invalid", "user", "--help"],
    ["--server", "https://gateway.invalid", "cluster", "account", "add", "--help"],
    ["--server", "https://gateway.invalid", "audit", "tail", "--help"],
    ["--server", "https://gateway.invalid", "policy", "reset", "--help"],
]

CODE = """
import sys
from casemate.cli import main
sys.argv = ["casemate", *sys.argv[1:]]
try:
    main.main()
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = {heavy!r}
ours = {ours!r}
bad = sorted(
    m for m in sys.modules if m.split(".")[0] in heavy or any(m == o or m.startswith(o + ".")
    for o in ours)
)
print("LOADED:" + ",".join(bad))
"""


@pytest.mark.parametrize("args", LIGHT_HELP, ids=" ".join)
def test_help_loads_no_server_code(args: list[str]) -> None:
    code = CODE.format(heavy=HEAVY, ours=HEAVY_OURS)
    r = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = r.stdout.rsplit("LOADED:", 1)[1].strip()
    assert loaded == "", f"casemate {' '.join(args)} loaded {loaded}"


def test_the_audit_help_names_the_real_query_limit() -> None:
    from casemate.cli import audit
    from casemate.core.audit import MAX_QUERY_LIMIT

    assert audit.QUERY_LIMIT_HELP == MAX_QUERY_LIMIT


def test_the_cloud_rule_effects_are_the_registrys() -> None:
    # cli/cloud.py keeps its own copy of the enum (the edge.cloud package is slow to import)
    from casemate.cli import cloud
    from casemate.edge.cloud import Effect

    assert [e.value for e in cloud.Effect] == [e.value for e in Effect]


def test_the_edge_help_names_the_real_broker_password_variable_and_token_header() -> None:
    from casemate.cli import edge
    from casemate.edge import proxyconfig, service

    assert edge.BROKER_PASSWORD_ENV == service.BROKER_PASSWORD_ENV
    assert edge.DEFAULT_TOKEN_HEADER == proxyconfig.DEFAULT_TOKEN_HEADER


def test_the_posture_help_names_the_real_formats() -> None:
    from casemate.cli import posture_common
    from casemate.posture.output import FORMATS

    assert posture_common.FORMATS == FORMATS


def test_the_vuln_help_names_the_real_advisory_kinds_and_mirror() -> None:
    from casemate.cli import vuln
    from casemate.vuln.advisories.index import SOURCES
    from casemate.vuln.remediate.plan import SECURITY_MIRROR

    assert vuln.SOURCES == tuple(SOURCES)
    assert vuln.SECURITY_MIRROR == SECURITY_MIRROR
