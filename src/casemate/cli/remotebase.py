"""What the remote admin commands share (cli/remoteadmin.py, cli/remotefiles.py): the chosen
server, one API call with the admin's login, tables and secrets read from standard input."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import urlencode

import typer
from rich.console import Console
from rich.table import Table

from casemate.cli.client import Api, load_config, quote_part

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

#: The server chosen by main() from --server (None: the environment or the stored login).
SERVER: list[str | None] = [None]

SERVER_LOCAL = {
    "serve": "runs the gateway itself",
    "doctor": "checks the prerequisites of the machine it runs on",
    "vault": "works on the gateway's own vault key and database",
    "demo": "starts a local demo",
    "edge": "runs or configures the edge proxy on its host",
    "cloud": "runs the edge cloud service",
    "posture": "scans from this machine",
    "admission": "runs the admission webhook",
    "vuln": "scans images from this machine",
}


def _api() -> Api:
    return Api(load_config(url=SERVER[0]))


def _call(method: str, path: str, body: Any = None) -> Any:
    with _api() as api:
        return api.call(method, path, json_body=body)


def _q(**params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "", [])}
    return ("?" + urlencode(kept, doseq=True)) if kept else ""


def _p(value: str) -> str:
    return quote_part(value)


def _table(*columns: str, rows: list[list[Any]]) -> None:
    table = Table(*columns, box=None)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)


def _secret_stdin(what: str) -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt(what, hide_input=True, confirmation_prompt=True)
        return value
    return sys.stdin.readline().rstrip("\r\n")
