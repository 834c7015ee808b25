"""``casemate cluster`` and ``casemate grant``: Kubernetes clusters, system accounts, grants.

Acts as the local administrator on the server's host. Credentials are read from files or
standard input, never from the command line, and never printed: accounts show fingerprints.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from casemate.cli.common import DataDirOption, out, read_secret_stdin, runtime
from casemate.cli.durations import grant_ttl_seconds
from casemate.errors import InvalidInput

if TYPE_CHECKING:  # the k8s layer loads the database layer: imported by the commands that
    # run, so `casemate cluster --help` starts fast
    from casemate.k8s.client import Credential
    from casemate.k8s.clusters import AccountInfo, AdminRef, Clusters, GrantInfo

app = typer.Typer(
    help="Manage Kubernetes clusters and their system accounts.", no_args_is_help=True
)
account_app = typer.Typer(help="Manage a cluster's system accounts.", no_args_is_help=True)
grant_app = typer.Typer(help="Give users and groups access to clusters.", no_args_is_help=True)
app.add_typer(account_app, name="account")

NamespaceOption = Annotated[
    list[str] | None, typer.Option("--namespace", "-n", help="A namespace (repeatable).")
]
AdminAccountOption = Annotated[
    str | None,
    typer.Option("--admin-account", help="Use this stored system account as the admin."),
]
AdminTokenFileOption = Annotated[
    Path | None,
    typer.Option("--admin-token-file", help="Read a one-shot admin token from this file."),
]
AdminKubeconfigOption = Annotated[
    Path | None,
    typer.Option("--admin-kubeconfig", help="Use this kubeconfig's credential as the admin."),
]
AdminContextOption = Annotated[
    str | None, typer.Option("--admin-context", help="Context of --admin-kubeconfig.")
]
TokenFileOption = Annotated[
    Path | None, typer.Option("--token-file", help="Read the token from this file.")
]
CertFileOption = Annotated[
    Path | None, typer.Option("--cert-file", help="Client certificate (PEM) file.")
]
KeyFileOption = Annotated[Path | None, typer.Option("--key-file", help="Client key (PEM) file.")]


@contextmanager
def _service(data_dir: Path | None) -> Iterator[Clusters]:
    from casemate.k8s.clusters import Clusters

    rt = runtime(data_dir)
    try:
        yield Clusters(rt.db, rt.vault, rt.audit)
    finally:
        rt.close()


def _read_token_file(path: Path) -> str:
    from casemate.k8s.clusters import read_pem_file

    data = read_pem_file(path, "token")
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidInput(f"the token file {path} does not hold a token") from None


def _read_kubeconfig(path: Path) -> tuple[bytes, Path]:
    """The kubeconfig's bytes and the directory its file references are relative to."""
    from casemate.k8s.kubeconfig import MAX_KUBECONFIG_BYTES

    if str(path) == "-":
        data = sys.stdin.buffer.read(MAX_KUBECONFIG_BYTES + 1)
        return data, Path.cwd()
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KUBECONFIG_BYTES + 1)
    except OSError as e:
        raise InvalidInput(f"cannot read the kubeconfig {path}: {e.strerror}") from None
    return data, path.resolve().parent


def _token_or_cert(
    token_file: Path | None, cert_file: Path | None, key_file: Path | None, what: str
) -> Credential:
    """A credential from files, or a token from standard input when no file is named."""
    from casemate.k8s.client import Credential
    from casemate.k8s.clusters import read_pem_file

    if cert_file is not None or key_file is not None:
        if token_file is not None:
            raise InvalidInput("give a token or a client certificate, not both")
        if cert_file is None or key_file is None:
            raise InvalidInput("--cert-file and --key-file go together")
        return Credential.client_cert(
            read_pem_file(cert_file, "client certificate"), read_pem_file(key_file, "client key")
        )
    if token_file is not None:
        return Credential.bearer(_read_token_file(token_file))
    return Credential.bearer(read_secret_stdin(what))


def _admin_ref(
    clusters: Clusters,
    cluster: str,
    admin_account: str | None,
    admin_token_file: Path | None,
    admin_kubeconfig: Path | None,
    admin_context: str | None,
    *,
    stdin_default: bool,
) -> AdminRef | None:
    from casemate.k8s.client import Credential
    from casemate.k8s.clusters import credential_from_kubeconfig
    from casemate.k8s.kubeconfig import validate_server_url

    chosen = [x for x in (admin_account, admin_token_file, admin_kubeconfig) if x is not None]
    if len(chosen) > 1:
        raise InvalidInput("give one of --admin-account, --admin-token-file and --admin-kubeconfig")
    if admin_account is not None:
        return admin_account
    if admin_token_file is not None:
        return Credential.bearer(_read_token_file(admin_token_file))
    if admin_kubeconfig is not None:
        raw, base_dir = _read_kubeconfig(admin_kubeconfig)
        entry, credential = credential_from_kubeconfig(
            raw, context=admin_context, base_dir=base_dir
        )
        if validate_server_url(entry.server) != clusters.get_cluster(cluster).server:
            raise InvalidInput(
                f"the admin kubeconfig points at {entry.server}, not at cluster {cluster}"
            )
        return credential
    if stdin_default:
        return Credential.bearer(read_secret_stdin("Admin token"))
    return None


def _print_account(verb: str, a: AccountInfo) -> None:
    bound = f" in {', '.join(a.namespaces)}" if a.namespaces else ""
    preset = f" ({a.preset})" if a.preset else ""
    out.print(
        f"{verb} account {a.name} of cluster {a.cluster}: {a.kind} {a.fingerprint}, "
        f"acts as {a.subject}{preset}{bound}",
        markup=False,
    )


# Clusters -----------------------------------------------------------------------------------


@app.command("add")
def add(
    name: str,
    server: Annotated[str, typer.Option("--server", help="API server URL (https://).")],
    ca_file: Annotated[Path, typer.Option("--ca-file", help="The cluster's CA bundle (PEM).")],
    data_dir: DataDirOption = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Connect first to verify URL and CA.")
    ] = True,
) -> None:
    """Register a cluster by address and CA."""
    from casemate.k8s.clusters import read_pem_file

    ca = read_pem_file(ca_file, "CA")
    with _service(data_dir) as clusters:
        c = clusters.register_cluster(
            name, server, ca, by=None, description=description, check=check
        )
        out.print(
            f"registered cluster {c.name} at {c.server} (CA {c.ca_fingerprint[:16]})",
            markup=False,
        )


@app.command("import")
def import_(
    kubeconfig: Annotated[Path, typer.Argument(help="Kubeconfig file ('-': standard input).")],
    data_dir: DataDirOption = None,
    context: Annotated[str | None, typer.Option(help="Context (default: current).")] = None,
    name: Annotated[str | None, typer.Option(help="Cluster name (default: from it).")] = None,
    account: Annotated[
        str | None, typer.Option(help="System account name (default: its user's).")
    ] = None,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    can_impersonate: Annotated[
        bool, typer.Option("--can-impersonate", help="Mark the account as able to impersonate.")
    ] = False,
) -> None:
    """Register a kubeconfig context's cluster and store its credential as a system account."""
    raw, base_dir = _read_kubeconfig(kubeconfig)
    with _service(data_dir) as clusters:
        c, a = clusters.import_kubeconfig(
            raw,
            by=None,
            context=context,
            name=name,
            account=account,
            base_dir=base_dir,
            description=description,
            can_impersonate=can_impersonate,
        )
        out.print(f"registered cluster {c.name} at {c.server}", markup=False)
        _print_account("stored", a)


@app.command("list")
def list_clusters(data_dir: DataDirOption = None) -> None:
    """List clusters."""
    with _service(data_dir) as clusters:
        table = Table("cluster", "server", "CA", "state", "accounts")
        for c in clusters.list_clusters():
            accounts = ",".join(a.name for a in clusters.list_accounts(c.name))
            state = "disabled" if c.disabled else "enabled"
            table.add_row(c.name, c.server, c.ca_fingerprint[:16], state, accounts)
        out.print(table)


@app.command("disable")
def disable(name: str, data_dir: DataDirOption = None) -> None:
    """Disable a cluster: its grants give no access until it is enabled again."""
    with _service(data_dir) as clusters:
        clusters.set_cluster_disabled(name, True, by=None)
        out.print(f"cluster {name} disabled")


@app.command("enable")
def enable(name: str, data_dir: DataDirOption = None) -> None:
    """Enable a disabled cluster."""
    with _service(data_dir) as clusters:
        clusters.set_cluster_disabled(name, False, by=None)
        out.print(f"cluster {name} enabled")


@app.command("delete")
def delete(name: str, data_dir: DataDirOption = None) -> None:
    """Forget a cluster, its system accounts (credentials leave the vault) and grants."""
    with _service(data_dir) as clusters:
        clusters.delete_cluster(name, by=None)
        out.print(f"deleted cluster {name}")


# System accounts ----------------------------------------------------------------------------


@account_app.command("add")
def account_add(
    cluster: str,
    name: str,
    data_dir: DataDirOption = None,
    token_file: TokenFileOption = None,
    cert_file: CertFileOption = None,
    key_file: KeyFileOption = None,
    namespace: NamespaceOption = None,
    can_impersonate: Annotated[
        bool, typer.Option("--can-impersonate", help="Mark it as able to impersonate users.")
    ] = False,
) -> None:
    """Store a token (standard input or --token-file) or a client certificate as a system
    account, after the cluster accepted it."""
    credential = _token_or_cert(token_file, cert_file, key_file, "Token")
    with _service(data_dir) as clusters:
        a = clusters.add_account(
            cluster,
            name,
            credential,
            by=None,
            namespaces=namespace or [],
            can_impersonate=can_impersonate,
        )
        _print_account("stored", a)


@account_app.command("provision")
def account_provision(
    cluster: str,
    name: str,
    preset: Annotated[str, typer.Option("--preset", help="view, edit or admin.")],
    namespace: NamespaceOption = None,
    data_dir: DataDirOption = None,
    admin_account: AdminAccountOption = None,
    admin_token_file: AdminTokenFileOption = None,
    admin_kubeconfig: AdminKubeconfigOption = None,
    admin_context: AdminContextOption = None,
) -> None:
    """Create ServiceAccount casemate-NAME bound to the preset in each namespace and store its
    token. The admin credential (standard input by default) is used for this call only."""
    with _service(data_dir) as clusters:
        admin = _admin_ref(
            clusters,
            cluster,
            admin_account,
            admin_token_file,
            admin_kubeconfig,
            admin_context,
            stdin_default=True,
        )
        assert admin is not None
        a = clusters.provision_account(cluster, name, namespace or [], preset, admin=admin, by=None)
        _print_account("provisioned", a)


@account_app.command("rotate")
def account_rotate(
    cluster: str,
    name: str,
    data_dir: DataDirOption = None,
    token_file: TokenFileOption = None,
    cert_file: CertFileOption = None,
    key_file: KeyFileOption = None,
    admin_account: AdminAccountOption = None,
    admin_token_file: AdminTokenFileOption = None,
    admin_kubeconfig: AdminKubeconfigOption = None,
    admin_context: AdminContextOption = None,
) -> None:
    """Replace an account's credential. Provisioned accounts get a new token from the cluster
    (admin credential needed, standard input by default) and the old one is revoked; others
    take the new token (standard input or --token-file) or certificate."""
    with _service(data_dir) as clusters:
        provisioned = clusters.get_account(cluster, name).service_account is not None
        if provisioned:
            admin = _admin_ref(
                clusters,
                cluster,
                admin_account,
                admin_token_file,
                admin_kubeconfig,
                admin_context,
                stdin_default=True,
            )
            a = clusters.rotate_account(cluster, name, by=None, admin=admin)
        else:
            credential = _token_or_cert(token_file, cert_file, key_file, "New token")
            a = clusters.rotate_account(cluster, name, by=None, credential=credential)
        _print_account("rotated", a)


@account_app.command("list")
def account_list(cluster: str, data_dir: DataDirOption = None) -> None:
    """List a cluster's system accounts (fingerprints, never credentials)."""
    with _service(data_dir) as clusters:
        table = Table("account", "kind", "fingerprint", "acts as", "preset", "namespaces")
        for a in clusters.list_accounts(cluster):
            table.add_row(
                a.name,
                a.kind,
                a.fingerprint[:16],
                a.subject,
                a.preset or "",
                ",".join(a.namespaces),
            )
        out.print(table)


@account_app.command("delete")
def account_delete(
    cluster: str,
    name: str,
    data_dir: DataDirOption = None,
    admin_account: AdminAccountOption = None,
    admin_token_file: AdminTokenFileOption = None,
    admin_kubeconfig: AdminKubeconfigOption = None,
    admin_context: AdminContextOption = None,
) -> None:
    """Forget a system account and its grants; with an admin credential, also delete what
    Casemate provisioned for it in the cluster."""
    with _service(data_dir) as clusters:
        admin = _admin_ref(
            clusters,
            cluster,
            admin_account,
            admin_token_file,
            admin_kubeconfig,
            admin_context,
            stdin_default=False,
        )
        clusters.delete_account(cluster, name, by=None, admin=admin)
        out.print(f"deleted account {name} of cluster {cluster}")


# Grants -------------------------------------------------------------------------------------


def parse_expiry(expires: str | None, ttl: str | None, now: datetime) -> datetime | None:
    """``--expires`` (ISO 8601 with a time zone) or ``--ttl`` (``90m``, ``8h``, ``7d``)."""
    if expires is not None and ttl is not None:
        raise InvalidInput("give --expires or --ttl, not both")
    if ttl is not None:
        return now + timedelta(seconds=grant_ttl_seconds(ttl))
    if expires is not None:
        try:
            return datetime.fromisoformat(expires.strip())
        except ValueError:
            raise InvalidInput("--expires is an ISO 8601 time, e.g. 2026-12-01T18:00Z") from None
    return None


def _grant_line(g: GrantInfo) -> str:
    until = f" until {g.expires_at:%Y-%m-%d %H:%M}Z" if g.expires_at else ""
    return (
        f"grant {g.id}: {g.subject_kind} {g.subject} -> cluster {g.cluster} as {g.account} "
        f"in {', '.join(g.namespaces)}{until}"
    )


@grant_app.command("add")
def grant_add(
    cluster: Annotated[str, typer.Option("--cluster", "-c", help="Cluster name.")],
    account: Annotated[str, typer.Option("--account", "-a", help="System account name.")],
    namespace: NamespaceOption = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="For this user.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="For this group.")] = None,
    expires: Annotated[
        str | None, typer.Option(help="Expiry, ISO 8601 with a zone (2026-12-01T18:00Z).")
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Lifetime instead: 90m, 8h, 7d.")] = None,
    note: Annotated[str, typer.Option(help="Why (free text).")] = "",
    data_dir: DataDirOption = None,
) -> None:
    """Give a user or a group a cluster through a system account, in listed namespaces."""
    expires_at = parse_expiry(expires, ttl, datetime.now(UTC))
    with _service(data_dir) as clusters:
        g = clusters.add_grant(
            cluster,
            account,
            by=None,
            user=user,
            group=group,
            namespaces=namespace or [],
            expires_at=expires_at,
            note=note,
        )
        out.print(_grant_line(g), markup=False)


@grant_app.command("list")
def grant_list(
    data_dir: DataDirOption = None,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only grants in force.")] = False,
) -> None:
    """List grants with their state."""
    now = datetime.now(UTC)
    with _service(data_dir) as clusters:
        table = Table("id", "subject", "cluster", "account", "namespaces", "expires", "state")
        for g in clusters.list_grants(cluster=cluster, user=user, group=group, active_only=active):
            table.add_row(
                str(g.id),
                f"{g.subject_kind}:{g.subject}",
                g.cluster,
                g.account,
                ",".join(g.namespaces),
                f"{g.expires_at:%Y-%m-%d %H:%M}Z" if g.expires_at else "never",
                g.state(now),
            )
        out.print(table)


@grant_app.command("revoke")
def grant_revoke(
    grant_id: int,
    reason: Annotated[str, typer.Option(help="Why (audited).")] = "",
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a grant at once."""
    with _service(data_dir) as clusters:
        g = clusters.revoke_grant(grant_id, by=None, reason=reason)
        out.print(f"revoked grant {g.id} ({g.subject_kind} {g.subject}, cluster {g.cluster})")
