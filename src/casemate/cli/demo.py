"""``casemate demo up``: try the bastion on this machine, with a disposable cluster.

It starts the test environment's local Kubernetes control plane (``casemate.testenv``, the
binaries ``scripts/build-testenv`` builds), with a real node (a kubelet on a containerd of its
own, ``casemate.testenv.node``) where this machine allows one (root, containerd, runc, the CNI
plugins: otherwise it says what is missing and the pods are kwok's, which never run), and a
Casemate installation in a demo data
directory: the cluster registered as ``demo``, a system account ``demo-ops`` (``edit`` in
namespace ``demo``), a user ``demo`` (operator) granted it, the default command policy. Then it
runs the gateway exactly as ``casemate serve`` does (HTTP API and Kubernetes API proxy, with the
test kubectl and helm as the sessions' tools) and prints how to connect. Ctrl-C stops the
gateway and removes the cluster; the data directory stays unless ``--clean``.

The data directory is marked as a demo's (``.casemate-demo``): the demo refuses to touch a
directory that holds anything else, since it re-registers the cluster and resets the demo
users' passwords at every start.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from casemate.cli import serve
from casemate.cli.common import out
from casemate.errors import ConfigError, InvalidInput, NotFound

if TYPE_CHECKING:  # the storage, k8s and test environment layers: imported by `demo up` when
    # it runs, so `demo --help` starts fast
    from casemate.core.settings import Settings
    from casemate.testenv.kube import KubeBinaries, LocalCluster
    from casemate.testenv.node import RealNode

app = typer.Typer(
    help="A local demo: a disposable Kubernetes cluster behind the gateway.",
    no_args_is_help=True,
)

MARKER = ".casemate-demo"
CLUSTER = "demo"
NAMESPACE = "demo"
OTHER_NAMESPACE = "demo-other"
ACCOUNT = "demo-ops"
USER = "demo"
DEPLOYMENT = "web"


def _password(username: str) -> str:
    from casemate.core.identity import check_password_policy

    while True:
        candidate = secrets.token_urlsafe(15)
        try:
            check_password_policy(candidate, min_length=12, username=username)
        except InvalidInput:
            continue
        return candidate


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _prepare_data_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"{data_dir} is not a directory")
    if data_dir.is_dir() and any(data_dir.iterdir()) and not (data_dir / MARKER).exists():
        raise ConfigError(
            f"{data_dir} is not a demo data directory (no {MARKER} in it): "
            "choose another --data-dir"
        )
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("created by casemate demo up\n")


#: scripts/build-testenv when Casemate runs from a source checkout (not from a pip install)
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build-testenv"


def _binaries() -> KubeBinaries:
    from casemate.testenv.kube import ClusterError, find_binaries, testenv_cache_dir

    try:
        return find_binaries()
    except ClusterError as e:
        missing = e.message.split(": ", 1)[-1].split("; ", 1)[0]
        if BUILD_SCRIPT.exists():
            how = f"build them with {BUILD_SCRIPT} (Go from Debian's golang package; ~10 minutes)"
        else:
            how = (
                "this is a pip install, which does not carry the build script: put these"
                " executables at those paths (Kubernetes server binaries, etcd, kwok and helm"
                " of the versions in the paths), or build them from a Casemate source checkout"
                " with scripts/build-testenv and point CASEMATE_TESTENV_CACHE at its cache"
            )
        raise ConfigError(
            f"the demo needs a local Kubernetes control plane; missing in "
            f"{testenv_cache_dir()}: {missing}. To get them, {how}"
        ) from None


def _start_cluster(workdir: Path, binaries: KubeBinaries) -> LocalCluster:
    from casemate.testenv.kube import LocalCluster

    shutil.rmtree(workdir, ignore_errors=True)  # left by a demo that was killed
    workdir.mkdir(mode=0o700, parents=True)
    cluster = LocalCluster(workdir, binaries=binaries)
    out.print("Starting a local Kubernetes cluster (etcd, kube-apiserver, kwok)…", markup=False)
    started = time.monotonic()
    cluster.start()
    out.print(
        f"  cluster ready at {cluster.server_url} in {time.monotonic() - started:.0f} s "
        f"(logs in {workdir})",
        markup=False,
    )
    return cluster


def _start_node(cluster: LocalCluster, workdir: Path) -> RealNode | None:
    """A real node when this machine allows one; None (and why) otherwise."""
    from casemate.testenv.node import RealNode, missing_prerequisites

    missing = missing_prerequisites()
    if missing:
        out.print(
            "  no real node (pods will not really run): missing " + "; ".join(missing),
            markup=False,
        )
        return None
    node = RealNode(cluster, workdir)
    started = time.monotonic()
    node.start()
    out.print(
        f"  real node '{node.name}' (kubelet on containerd) ready in "
        f"{time.monotonic() - started:.0f} s",
        markup=False,
    )
    return node


def _web_deployment() -> dict[str, object]:
    """Two busybox web servers on the real node: real pods to exec into and read logs of."""
    from casemate.testenv.node import BUSYBOX_IMAGE, real_node_placement

    script = (
        "mkdir -p /www && echo 'hello from a real pod' > /www/index.html && "
        "echo serving on :8080 && exec httpd -f -v -p 8080 -h /www"
    )
    labels = {"app": DEPLOYMENT}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    **real_node_placement(),
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "web",
                            "image": BUSYBOX_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", script],
                            "ports": [{"containerPort": 8080}],
                        }
                    ],
                },
            },
        },
    }


def _populate(cluster: LocalCluster, node: RealNode | None) -> None:
    from casemate.testenv.kube import ClusterError

    for ns in (NAMESPACE, OTHER_NAMESPACE):
        cluster.create_namespace(ns)
    if node is None:
        cluster.kubectl(
            "create", "deployment", DEPLOYMENT, "--image=nginx:1.27", "--replicas=2", "-n",
            NAMESPACE,
        )  # fmt: skip
    else:
        resp = cluster.http.post(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", json=_web_deployment()
        )
        if not resp.is_success:
            raise ClusterError(f"creating the demo deployment: HTTP {resp.status_code}")
    deadline = time.monotonic() + 60
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}"
    while time.monotonic() < deadline:  # a few seconds on the real node, less on kwok
        resp = cluster.http.get(path)
        if resp.is_success and resp.json().get("status", {}).get("readyReplicas") == 2:
            break
        time.sleep(0.2)


def _install(settings: Settings, cluster: LocalCluster) -> tuple[str, str]:
    """The demo's users, cluster, system account and grant; returns the passwords to show of
    the admin and of ``demo`` (new at every start; the admin's is CASEMATE_ADMIN_PASSWORD's
    when that is set)."""
    from casemate.core.runtime import open_runtime
    from casemate.k8s.client import Credential
    from casemate.k8s.clusters import Clusters

    rt = open_runtime(settings, create=True)
    try:
        identity = rt.identity
        identity.ensure_first_admin(settings)
        if settings.admin_password is not None:
            admin_password = settings.admin_password.get_secret_value()
            shown_admin = "as in CASEMATE_ADMIN_PASSWORD"
        else:
            admin_password = shown_admin = _password(settings.admin_username)
        identity.set_password(settings.admin_username, admin_password, by=None)
        user_password = _password(USER)
        try:
            identity.get_user(USER)
        except NotFound:
            identity.create_user(
                USER, by=None, password=user_password, roles=["operator"], display_name="Demo"
            )
        else:
            identity.update_user(USER, by=None, roles=["operator"], disabled=False)
            identity.set_password(USER, user_password, by=None)

        clusters = Clusters(rt.db, rt.vault, rt.audit, token_wait=60.0)
        try:
            clusters.delete_cluster(CLUSTER, by=None)  # the previous run's cluster is gone
        except NotFound:
            pass
        clusters.register_cluster(
            CLUSTER,
            cluster.server_url,
            cluster.ca_pem,
            by=None,
            description="casemate demo up: a disposable local cluster",
        )
        clusters.provision_account(
            CLUSTER,
            ACCOUNT,
            [NAMESPACE],
            "edit",
            admin=Credential.bearer(cluster.admin_token),
            by=None,
        )
        clusters.add_grant(
            CLUSTER, ACCOUNT, by=None, user=USER, namespaces=[NAMESPACE], note="demo"
        )
        return shown_admin, user_password
    finally:
        rt.close()


def _guide(
    settings: Settings, admin_password: str, user_password: str, url: str, *, clean: bool
) -> None:
    data = settings.data_dir
    kept = "is removed too (--clean)" if clean else "stays (--clean removes it)"
    lines = [
        "",
        f"Casemate demo: cluster '{CLUSTER}' (namespaces {NAMESPACE}, {OTHER_NAMESPACE}) behind "
        "the gateway.",
        f"  web and API:  {url}   (API docs: {url}/api/v1/docs)",
        f"  user {USER}       password: {user_password}   (operator: namespace {NAMESPACE} "
        f"through the system account {ACCOUNT})",
        f"  user {settings.admin_username}      password: {admin_password}   (admin)",
        f"Connect as {USER}:",
        f"  casemate login --url {url} --user {USER}",
        f"  casemate exec {CLUSTER} -- kubectl get pods",
        f"  casemate connect {CLUSTER}                     # the restricted shell",
        f"  casemate exec {CLUSTER} -- kubectl logs deployment/{DEPLOYMENT}"
        "   # real pods where the machine allows a real node",
        f"  casemate exec {CLUSTER} -- kubectl delete namespace {NAMESPACE}"
        "         # refused by the command policy",
        f"  casemate exec {CLUSTER} -- kubectl scale deployment {DEPLOYMENT} --replicas=0"
        "   # held for review; as admin:",
        f"      casemate review list --data-dir {data}",
        f"      casemate review approve TICKET --as {settings.admin_username} --data-dir {data}",
        f"  over HTTP: POST {url}/api/v1/clusters/{CLUSTER}/exec "
        '{"line": "kubectl get pods"} (NDJSON)',
        f"Ctrl-C stops the gateway and removes the cluster; the data directory {data} {kept}.",
    ]
    for line in lines:
        out.print(line, markup=False)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("up")
def up(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The demo's data directory.")] = Path(
        "casemate-demo"
    ),
    listen: Annotated[
        str, typer.Option(help="HOST:PORT of the HTTP API and web UI.")
    ] = "127.0.0.1:8080",
    kubeproxy_listen: Annotated[
        str | None,
        typer.Option(
            help="HOST:PORT of the Kubernetes API proxy (default: a free port on 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    clean: Annotated[
        bool, typer.Option("--clean", help="Also remove the data directory on exit.")
    ] = False,
) -> None:
    """Start a disposable local cluster and the gateway in front of it; Ctrl-C stops both."""
    from casemate.core.settings import load_settings, parse_listen

    binaries = _binaries()
    host, port = parse_listen(listen)
    serve._bind(host, port).close()  # one clear line now, not after the cluster started
    if kubeproxy_listen is None:
        kubeproxy_listen = f"127.0.0.1:{_free_port('127.0.0.1')}"
    data_dir = data_dir.absolute()
    _prepare_data_dir(data_dir)
    # Ctrl-C and SIGTERM both end in our KeyboardInterrupt: uvicorn re-raises the signal it
    # stopped on into this handler, not into asyncio's (which cancels its task instead)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    cluster: LocalCluster | None = None
    node: RealNode | None = None
    workdir = data_dir / "kube"
    interrupted = False
    try:
        cluster = _start_cluster(workdir, binaries)
        node = _start_node(cluster, workdir / "node")
        _populate(cluster, node)
        settings = load_settings(
            data_dir=data_dir,
            database_url=f"sqlite:///{data_dir / 'casemate.db'}",  # never a real installation's
            listen=listen,
            kubeproxy_listen=kubeproxy_listen,
            kubectl_path=binaries.kubectl,
            helm_path=binaries.helm,
        )
        admin_password, user_password = _install(settings, cluster)
        try:
            serve.run_server(
                settings,
                ready=lambda url: _guide(settings, admin_password, user_password, url, clean=clean),
            )
        except KeyboardInterrupt:
            interrupted = True
    finally:
        if node is not None:
            node.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if clean:
            shutil.rmtree(data_dir, ignore_errors=True)
    kept = "removed too" if clean else f"kept in {data_dir}"
    reason = "stopped" if interrupted else "ended: the gateway stopped"
    out.print(f"Demo {reason}. The cluster is removed; the data directory is {kept}.", markup=False)
