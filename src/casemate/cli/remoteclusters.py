"""``casemate --server URL cluster …`` and ``grant …``: clusters, their system accounts and
grants over the API, as the admin's login.

Files (a kubeconfig, a CA bundle, a token, a client certificate and key) are read here and sent
in the request body; secrets come from files or standard input, never argv, and are never
printed: the server answers with fingerprints.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from casemate.cli.durations import grant_ttl_seconds
from casemate.cli.remotebase import _call, _p, _q, _secret_stdin, _table, out
from casemate.core.files import read_bounded, read_stream_bounded
from casemate.errors import ConfigError, InvalidInput

#: The server's limits: a kubeconfig of at most 1 MiB, PEM files of at most 64 KiB.
MAX_KUBECONFIG = 1024 * 1024
MAX_PEM = 64 * 1024


def _read(path: Path, what: str, limit: int) -> str:
    """A text file (``-``: standard input) of at most ``limit`` bytes."""
    name = f"the {what} {path}"
    if str(path) == "-":
        data = read_stream_bounded(sys.stdin.buffer, limit, name)
    else:
        data = read_bounded(path, limit, name, error=ConfigError, too_large=InvalidInput)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"the {what} {path} is not UTF-8 text") from None


cluster_app = typer.Typer(help="Manage Kubernetes clusters and their system accounts.")


@cluster_app.command("list")
def cluster_list() -> None:
    """List clusters."""
    rows = [
        [c["name"], c["server"], "disabled" if c["disabled"] else "", c["description"]]
        for c in _call("GET", "/clusters")
    ]
    _table("cluster", "server", "state", "description", rows=rows)


@cluster_app.command("add")
def cluster_add(
    name: str,
    server: Annotated[str, typer.Option("--server", help="API server URL (https://).")],
    ca_file: Annotated[Path, typer.Option("--ca-file", help="The cluster's CA bundle (PEM).")],
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Connect first to verify URL and CA.")
    ] = True,
) -> None:
    """Register a cluster by address and CA (the gateway connects to check them)."""
    body = {
        "name": name,
        "server": server,
        "ca_pem": _read(ca_file, "CA file", MAX_PEM),
        "description": description,
        "check": check,
    }
    c = _call("POST", "/clusters", body)
    out.print(
        f"registered cluster {c['name']} at {c['server']} (CA {c['ca_fingerprint'][:16]})",
        markup=False,
    )


@cluster_app.command("import")
def cluster_import(
    kubeconfig: Annotated[Path, typer.Argument(help="A kubeconfig file ('-': standard input).")],
    name: Annotated[str | None, typer.Option(help="Cluster name (default: from it).")] = None,
    context: Annotated[str | None, typer.Option(help="Context (default: current).")] = None,
    account: Annotated[
        str | None, typer.Option(help="System account name (default: its user's).")
    ] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    can_impersonate: Annotated[
        bool, typer.Option("--can-impersonate", help="Mark the account as able to impersonate.")
    ] = False,
) -> None:
    """Import a cluster and its credential from a kubeconfig: the file is read here and sent
    to the gateway, whose vault keeps the credential (it must carry its certificates and token
    inline: *-data fields, not file names)."""
    body = {
        "kubeconfig": _read(kubeconfig, "kubeconfig", MAX_KUBECONFIG),
        "name": name,
        "context": context,
        "account": account,
        "description": description,
        "can_impersonate": can_impersonate,
    }
    r = _call("POST", "/clusters/import", body)
    a = r["account"]
    out.print(
        f"imported cluster {r['cluster']['name']} with account {a['name']} "
        f"({a['subject']}, {a['fingerprint'][:16]})",
        markup=False,
    )


@cluster_app.command("disable")
def cluster_disable(name: str) -> None:
    """Disable a cluster: its grants give no access until it is enabled again."""
    _call("PATCH", f"/clusters/{_p(name)}", {"disabled": True})
    out.print(f"cluster {name} disabled", markup=False)


@cluster_app.command("enable")
def cluster_enable(name: str) -> None:
    """Enable a disabled cluster."""
    _call("PATCH", f"/clusters/{_p(name)}", {"disabled": False})
    out.print(f"cluster {name} enabled", markup=False)


@cluster_app.command("delete")
def cluster_delete(name: str) -> None:
    """Forget a cluster, its system accounts (credentials leave the vault) and grants."""
    _call("DELETE", f"/clusters/{_p(name)}")
    out.print(f"deleted cluster {name}", markup=False)


def _accounts_table(cluster: str) -> None:
    rows = [
        [a["name"], a["kind"], a["preset"], a["subject"], ",".join(a["namespaces"])]
        for a in _call("GET", f"/clusters/{_p(cluster)}/accounts")
    ]
    _table("account", "kind", "preset", "subject", "namespaces", rows=rows)


@cluster_app.command("accounts")
def cluster_accounts(cluster: str) -> None:
    """List a cluster's system accounts."""
    _accounts_table(cluster)


account_app = typer.Typer(help="A cluster's system accounts.", no_args_is_help=True)
cluster_app.add_typer(account_app, name="account")

AdminAccountOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-account",
        help="A stored account of the cluster to act with (default: an admin token read from "
        "standard input, used for this call only).",
    ),
]


def _admin_choice(admin_account: str | None) -> dict[str, Any]:
    if admin_account is not None:
        return {"admin_account": admin_account}
    return {"admin_token": _secret_stdin("Cluster admin token")}


@account_app.command("list")
def account_list(cluster: str) -> None:
    """List a cluster's system accounts."""
    _accounts_table(cluster)


@account_app.command("add")
def account_add(
    cluster: str,
    name: str,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="Read the token from this file.")
    ] = None,
    cert_file: Annotated[
        Path | None, typer.Option("--cert-file", help="Client certificate (PEM) file.")
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Client key (PEM) file.")
    ] = None,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="A namespace (repeatable).")
    ] = None,
    can_impersonate: Annotated[
        bool, typer.Option("--can-impersonate", help="Mark it as able to impersonate users.")
    ] = False,
) -> None:
    """Store a token (standard input or --token-file) or a client certificate and key as a
    system account; the gateway stores it after the cluster accepted it."""
    body: dict[str, Any] = {
        "name": name,
        "namespaces": namespace or [],
        "can_impersonate": can_impersonate,
    }
    if cert_file is not None or key_file is not None:
        if token_file is not None:
            raise InvalidInput("give a token or a client certificate, not both")
        if cert_file is None or key_file is None:
            raise InvalidInput("--cert-file and --key-file go together")
        body["client_certificate"] = _read(cert_file, "client certificate", MAX_PEM)
        body["client_key"] = _read(key_file, "client key", MAX_PEM)
    elif token_file is not None:
        body["token"] = _read(token_file, "token file", MAX_PEM).strip()
    else:
        body["token"] = _secret_stdin("Token")
    if "token" in body and not body["token"]:
        raise InvalidInput("the token is empty")
    a = _call("POST", f"/clusters/{_p(cluster)}/accounts", body)
    out.print(
        f"stored account {a['name']} on {cluster} ({a['kind']}, {a['subject']}, "
        f"{a['fingerprint'][:16]})",
        markup=False,
    )


@account_app.command("check")
def account_check(cluster: str, name: str) -> None:
    """Check a stored account against its cluster: reachable, who it authenticates as, where
    it may get pods. Exit 1 when a step failed."""
    c = _call("POST", f"/clusters/{_p(cluster)}/accounts/{_p(name)}/check")
    if c["error"]:
        out.print(f"account {name} on {cluster}: FAILED: {c['error']}", markup=False)
        raise typer.Exit(1)
    where = "every namespace" if c["cluster_wide"] else ", ".join(c["namespaces"]) or "none"
    same = "" if c["subject_matches"] else " (NOT the subject stored with it)"
    out.print(
        f"account {name} on {cluster}: ok, authenticates as {c['subject']}{same}; "
        f"may get pods in: {where}",
        markup=False,
    )


@account_app.command("provision")
def account_provision(
    cluster: str,
    name: str,
    preset: Annotated[str, typer.Option("--preset", help="view, edit or admin.")],
    namespace: Annotated[
        list[str], typer.Option("--namespace", "-n", help="Namespace (repeatable).")
    ],
    admin_account: AdminAccountOpt = None,
) -> None:
    """Create ServiceAccount casemate-NAME bound to the preset in each namespace; the gateway
    stores its token in its vault."""
    body = {"name": name, "preset": preset, "namespaces": namespace}
    body.update(_admin_choice(admin_account))
    a = _call("POST", f"/clusters/{_p(cluster)}/accounts/provision", body)
    out.print(f"provisioned account {a['name']} on {cluster} ({a['subject']})", markup=False)


@account_app.command("delete")
def account_delete(
    cluster: str,
    name: str,
    admin_account: Annotated[
        str | None,
        typer.Option(
            "--admin-account", help="A stored admin account: also remove the cluster objects."
        ),
    ] = None,
) -> None:
    """Remove a system account (its credential leaves the vault)."""
    _call(
        "DELETE", f"/clusters/{_p(cluster)}/accounts/{_p(name)}" + _q(admin_account=admin_account)
    )
    out.print(f"deleted account {name} of {cluster}", markup=False)


@account_app.command("rotate")
def account_rotate(
    cluster: str,
    name: str,
    admin_account: AdminAccountOpt = None,
    new_token: Annotated[
        bool,
        typer.Option(
            "--new-token",
            help="Not a provisioned account: read its new token from standard input.",
        ),
    ] = False,
) -> None:
    """Replace an account's credential: a provisioned account gets a new token from the
    cluster (the old one is revoked); another takes the new token (--new-token)."""
    if new_token:
        if admin_account is not None:
            raise InvalidInput("--new-token and --admin-account do not go together")
        body: dict[str, Any] = {"token": _secret_stdin("New token")}
    else:
        body = _admin_choice(admin_account)
    a = _call("POST", f"/clusters/{_p(cluster)}/accounts/{_p(name)}/rotate", body)
    out.print(f"rotated account {a['name']} on {cluster}", markup=False)


grant_app = typer.Typer(help="Give users and groups access to clusters.", no_args_is_help=True)


@grant_app.command("add")
def grant_add(
    cluster_arg: Annotated[
        str | None, typer.Argument(metavar="[CLUSTER]", help="Or --cluster.", show_default=False)
    ] = None,
    account_arg: Annotated[
        str | None, typer.Argument(metavar="[ACCOUNT]", help="Or --account.", show_default=False)
    ] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="Cluster name.")] = None,
    account: Annotated[
        str | None, typer.Option("--account", "-a", help="System account name.")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="For this user.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="For this group.")] = None,
    namespace: Annotated[
        list[str] | None, typer.Option("--namespace", "-n", help="A namespace (repeatable).")
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="Expiry, ISO 8601 with a zone (2026-12-01T18:00Z).")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Lifetime instead: 90m, 8h, 7d.")] = None,
    note: Annotated[str, typer.Option(help="Why (free text).")] = "",
) -> None:
    """Grant a user or group an account's access to namespaces of a cluster (the same flags
    as on the server: -c CLUSTER -a ACCOUNT -u USER -n NS --ttl 8h)."""
    if (user is None) == (group is None):
        raise InvalidInput("give exactly one of --user and --group")
    if (cluster_arg is not None and cluster is not None) or (
        account_arg is not None and account is not None
    ):
        raise InvalidInput("name the cluster and account once (arguments or options)")
    cluster, account = cluster or cluster_arg, account or account_arg
    if cluster is None or account is None:
        raise InvalidInput("give the cluster and the account (-c CLUSTER -a ACCOUNT)")
    if expires is not None and ttl is not None:
        raise InvalidInput("give --expires or --ttl, not both")
    body = {
        "cluster": cluster,
        "account": account,
        "user": user,
        "group": group,
        "namespaces": namespace or [],
        "expires_at": expires,
        "ttl_seconds": None if ttl is None else grant_ttl_seconds(ttl),
        "note": note,
    }
    g = _call("POST", "/grants", body)
    until = f" until {g['expires_at']}" if g["expires_at"] else ""
    out.print(
        f"grant {g['id']}: {g['subject']} on {g['cluster']} ({', '.join(g['namespaces'])}){until}",
        markup=False,
    )


@grant_app.command("list")
def grant_list(
    cluster: Annotated[str | None, typer.Option("--cluster", "-c")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only grants in force.")] = False,
) -> None:
    """List grants."""
    query = _q(cluster=cluster, user=user, group=group, active="true" if active else None)
    rows = [
        [
            g["id"],
            ("@" if g["subject_kind"] == "group" else "") + g["subject"],
            g["cluster"],
            g["account"],
            ",".join(g["namespaces"]),
            g["expires_at"] or "never",
            g["state"],
        ]
        for g in _call("GET", "/grants" + query)
    ]
    _table("id", "who", "cluster", "account", "namespaces", "expires", "state", rows=rows)


@grant_app.command("revoke")
def grant_revoke(
    grant_id: int, reason: Annotated[str, typer.Option(help="Why (audited).")] = ""
) -> None:
    """Revoke a grant."""
    _call("POST", f"/grants/{grant_id}/revoke", {"reason": reason})
    out.print(f"revoked grant {grant_id}")
