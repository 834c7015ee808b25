"""The ``casemate`` command. Casemate errors print one clear line and exit non-zero."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import typer
from rich.console import Console

from casemate import __version__
from casemate.errors import CasemateError, ConfigError

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
    # the user side: talks to a running server over its HTTP API (imported only when listed
    # or run: `casemate user add --help` does not load it)
    from casemate.cli import remote

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


#: Every other command: name -> (module under casemate.cli, attribute, one-line help). Only
#: the module of the command being run is imported (``casemate --help`` imports none of them:
#: the server modules take seconds to load); tests check the help lines match the modules.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": (
        "serve",
        "serve",
        "Run the Casemate gateway (HTTP API, web UI) on its database in the data directory.",
    ),
    "doctor": ("doctor", "doctor", "Check the gateway's prerequisites and say how to fix each."),
    "user": ("users", "app", "Manage users."),
    "token": ("tokens", "app", "Manage API tokens."),
    "audit": ("audit", "app", "Search, verify, export and follow the audit log."),
    "vault": ("vault", "app", "Manage the secret vault."),
    "cluster": ("clusters", "app", "Manage Kubernetes clusters and their system accounts."),
    "grant": ("clusters", "grant_app", "Give users and groups access to clusters."),
    "review": ("review", "app", "Commands held for approval."),
    "edge": ("edge", "app", "The edge proxy in front of dockerd: serve, users, image trust."),
    "cloud": ("cloud", "app", "The edge cloud service: gateways, rules, images, approvals."),
    "recording": ("recordings", "app", "Session recordings (asciicast v2)."),
    "policy": ("policy", "app", "The bastion's command policy."),
    "posture": ("posture", "app", "Security posture: check manifests and clusters."),
    "admission": ("admission", "app", "The posture admission webhook."),
    "demo": ("demo", "app", "A local demo: a disposable Kubernetes cluster behind the gateway."),
    "vuln": ("vuln", "app", "Vulnerable packages in images, against advisories loaded offline."),
}


def _load(name: str) -> Any:
    module, attr, _ = COMMANDS[name]
    return getattr(importlib.import_module(f"casemate.cli.{module}"), attr)


def _add(app: typer.Typer, name: str) -> None:
    target = _load(name)
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name)
    else:
        app.command(name)(target)


def _command_app(name: str) -> typer.Typer:
    """The app with just ``name`` (and its module) loaded."""
    app = _new_app()
    app.callback()(_no_options)  # a group, even with one command
    _add(app, name)
    return app


def _no_options() -> None:
    """Casemate: a security gateway for container clusters."""


def _index_app() -> typer.Typer:
    """For ``casemate``/``casemate --help``: every command listed, none loaded."""
    app = _new_app()
    for name, (_, _, help_text) in COMMANDS.items():
        app.command(name, help=help_text, context_settings={"ignore_unknown_options": True})(
            _unloaded
        )
    _add_remote(app)
    app.command("version")(version)
    return app


def _unloaded() -> None:  # pragma: no cover - main() loads the real command first
    raise AssertionError("command not loaded")


def _full_app() -> typer.Typer:
    """Every command loaded (the docs generator and tests walk this one)."""
    app = _new_app()
    for name in COMMANDS:
        _add(app, name)
    _add_remote(app)
    app.command("version")(version)
    return app


def _remote_admin_app(args: list[str]) -> typer.Typer:
    """``casemate --server URL …``: the admin commands over the API (cli/remoteadmin.py)."""
    from casemate.cli import remoteadmin

    first = args[0] if args else ""
    if first in remoteadmin.SERVER_LOCAL or (first == "recording" and "recover" in args[1:2]):
        why = remoteadmin.SERVER_LOCAL.get(first, "works on the gateway's own files")
        raise ConfigError(
            f"'casemate {first}' is server-local ({why}): run it on the gateway's host"
            " without --server"
        )
    app = _new_app()
    app.callback()(_no_options)
    for name, sub in remoteadmin.APPS.items():
        if name == first or first not in remoteadmin.APPS:
            app.add_typer(sub, name=name)
    return app


def split_server(args: list[str]) -> tuple[str | None, bool, list[str]]:
    """Leading ``--server URL`` / ``--server=URL`` / ``--remote``: (url, remote, the rest)."""
    url: str | None = None
    remote = False
    rest = list(args)
    while rest and (rest[0] in ("--server", "--remote") or rest[0].startswith("--server=")):
        option = rest.pop(0)
        remote = True
        if option == "--server":
            if not rest:
                raise ConfigError("--server needs the gateway's URL")
            url = rest.pop(0)
        elif option.startswith("--server="):
            url = option.split("=", 1)[1]
    return url, remote, rest


def _app_for(args: list[str]) -> typer.Typer:
    first = args[0] if args else ""
    if first in REMOTE_COMMANDS:
        return _remote_app()
    if first in COMMANDS:
        return _command_app(first)
    return _index_app()


def _help_off(app: typer.Typer, args: list[str]) -> dict[str, Any]:
    """A ``default_map`` giving ``--help`` the default False in the root group and in each
    group named on the command line. Left at None, typer coerces it through a pydantic
    adapter, and importing pydantic is a quarter of the start-up of ``casemate X Y --help``."""
    top: dict[str, Any] = {"help": False}
    level, node = top, app
    for word in args:
        sub = next((g.typer_instance for g in node.registered_groups if g.name == word), None)
        if sub is None:
            break
        level[word] = {"help": False}
        level, node = level[word], sub
    return top


def version() -> None:
    """Print Casemate's version."""
    typer.echo(__version__)


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        url, remote, args = split_server(sys.argv[1:])
        if remote and (not args or args[0] not in REMOTE_COMMANDS):
            from casemate.cli import remoteadmin

            remoteadmin.SERVER[0] = url
            app = _remote_admin_app(args)
        else:
            if remote and url:  # casemate --server URL exec …: the user side's own setting
                os.environ["CASEMATE_URL"] = url
            app = _app_for(args)
        app(args=args, default_map=_help_off(app, args))
    except CasemateError as e:
        err.print(f"casemate: error: {e.message}", markup=False)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
