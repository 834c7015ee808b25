"""The ``casemate`` command. Casemate errors print one clear line and exit non-zero."""

from __future__ import annotations

import logging
import sys

import typer

from casemate import __version__
from casemate.cli import (
    audit,
    cloud,
    clusters,
    demo,
    edge,
    policy,
    recordings,
    remote,
    review,
    serve,
    tokens,
    users,
    vault,
)
from casemate.cli.common import err
from casemate.errors import CasemateError

app = typer.Typer(
    name="casemate",
    help="Casemate: a security gateway for container clusters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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
app.add_typer(demo.app, name="demo")
# the user side: talks to a running server over its HTTP API
app.command("login")(remote.login)
app.command("logout")(remote.logout)
app.command("exec")(remote.exec_command)
app.command("connect")(remote.connect)
app.command("kubeconfig")(remote.kubeconfig)
app.add_typer(remote.session_app, name="session")


@app.command("version")
def version() -> None:
    """Print Casemate's version."""
    typer.echo(__version__)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except CasemateError as e:
        err.print(f"casemate: error: {e.message}", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
