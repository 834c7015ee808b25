"""The ``casemate`` command. Casemate errors print one clear line and exit non-zero."""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console

from casemate import __version__
from casemate.cli import remote
from casemate.errors import CasemateError

#: Commands of the user side: they only talk HTTP to a server. ``casemate exec …`` and the
#: like load just these (a fraction of a second) instead of every command module (seconds).
REMOTE_COMMANDS = frozenset({"login", "logout", "exec", "connect", "kubeconfig", "session"})


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="casemate",
        help="Casemate: a security gateway for container clusters.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )


def _add_remote(app: typer.Typer) -> None:
    # the user side: talks to a running server over its HTTP API
    app.command("login")(remote.login)
    app.command("logout")(remote.logout)
    app.command("exec")(remote.exec_command)
    app.command("connect")(remote.connect)
    app.command("kubeconfig")(remote.kubeconfig)
    app.add_typer(remote.session_app, name="session")


def _remote_app() -> typer.Typer:
    app = _new_app()
    _add_remote(app)
    return app


def _full_app() -> typer.Typer:
    from casemate.cli import (
        admission,
        audit,
        cloud,
        clusters,
        demo,
        edge,
        policy,
        posture,
        recordings,
        review,
        serve,
        tokens,
        users,
        vault,
        vuln,
    )

    app = _new_app()
    app.command("serve")(serve.serve)
    app.add_typer(users.app, name="user")
    app.add_typer(tokens.app, name="token")
    app.add_typer(audit.app, name="audit")
    app.add_typer(vault.app, name="vault")
    app.add_typer(clusters.app, name="cluster")
    app.add_typer(clusters.grant_app, name="grant")
    app.add_typer(review.app, name="review")
    app.add_typer(edge.app, name="edge")
    app.add_typer(cloud.app, name="cloud")
    app.add_typer(recordings.app, name="recording")
    app.add_typer(policy.app, name="policy")
    app.add_typer(posture.app, name="posture")
    app.add_typer(admission.app, name="admission")
    app.add_typer(demo.app, name="demo")
    app.add_typer(vuln.app, name="vuln")
    _add_remote(app)
    app.command("version")(version)
    return app


def version() -> None:
    """Print Casemate's version."""
    typer.echo(__version__)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    args = sys.argv[1:]
    app = _remote_app() if args and args[0] in REMOTE_COMMANDS else _full_app()
    try:
        app()
    except CasemateError as e:
        err.print(f"casemate: error: {e.message}", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
