"""Issue 9 against the real cluster, with a system account that could do the harm itself
(``admin`` in namespace A: it may create service-account-token Secrets, bind roles, scale,
patch and delete anything there): review previews never change the cluster, no credential
can be minted that works outside Casemate, Secret data stays secret, and the shell and an
issued kubeconfig (real kubectl) decide alike."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from casemate.bastion.policy import Policy, default_policy
from casemate.bastion.runner import EXIT_REFUSED, Tools
from casemate.core.identity import Principal
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.gateway.service import BastionSession, Gateway
from casemate.k8s.client import Credential
from casemate.k8s.clusters import Clusters
from casemate.testenv.kube import LocalCluster, find_binaries
from tests.gateway.conftest import PASSWORD, principal
from tests.gateway.helpers import audit_details

pytestmark = pytest.mark.k8s

REVIEW_EVERYTHING = Policy.from_yaml(
    """\
version: 1
default_action: reject
rules:
  - id: test.review-everything
    priority: 5000
    action: review
    description: every kubectl command is held (to preview each of them)
    match:
      tools: [kubectl, helm]
"""
)


@dataclass
class Door:
    rt: Runtime
    gateway: Gateway
    kube: LocalCluster
    ns: str
    alice: Principal
    bob: Principal
    token: str
    policy: list[Policy]
    tmp: Path
    account: str

    def reset(self) -> None:
        """Start from an empty namespace (it is shared by the module's tests)."""
        self.kube.kubectl(
            "-n", self.ns, "delete", "deployments,configmaps,secrets", "--all", "--wait=true"
        )
        self.kube.kubectl("-n", self.ns, "delete", "pods", "--all", "--grace-period=0", "--force")

    def snapshot(self) -> dict[str, Any]:
        """Every object of the namespace that a command here could touch, by resourceVersion."""
        out = self.kube.kubectl(
            "-n",
            self.ns,
            "get",
            "deployments,configmaps,pods,services,secrets,serviceaccounts,roles,rolebindings",
            "-o",
            "json",
        ).stdout
        items = json.loads(out)["items"]
        return {
            f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
            for i in items
            if not i["metadata"]["name"].startswith("kube-root-ca")
        }

    async def kubeconfig(self) -> Callable[..., subprocess.CompletedProcess[str]]:
        text, _ = await self.gateway.issue_kubeconfig(self.alice, "test")
        assert self.token not in text
        path = self.tmp / f"kc-{secrets.token_hex(3)}"
        path.write_text(text)
        kubectl = str(find_binaries().kubectl)

        def k(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [kubectl, "--kubeconfig", str(path), "-n", self.ns, *args],
                capture_output=True,
                text=True,
                timeout=60,
                input=stdin,
            )

        return k


@pytest.fixture
async def door(
    tmp_path: Path, kube_cluster: LocalCluster, bastion_namespaces: tuple[str, str]
) -> AsyncIterator[Door]:
    ns = bastion_namespaces[0]
    settings = load_settings(
        data_dir=tmp_path / "data",
        admin_password=PASSWORD,
        kubeproxy_listen="127.0.0.1:0",
        sqlite_synchronous="NORMAL",
    )
    rt = open_runtime(settings, create=True)
    rt.identity.ensure_first_admin(settings)
    admin = principal(rt, "admin")
    rt.identity.create_user("alice", by=admin, password=PASSWORD, roles=["operator"])
    rt.identity.create_user("bob", by=admin, password=PASSWORD, roles=["approver"])
    clusters = Clusters(rt.db, rt.vault, rt.audit, token_wait=60.0)
    clusters.register_cluster("test", kube_cluster.server_url, kube_cluster.ca_pem, by=admin)
    account = f"pow-{secrets.token_hex(3)}"
    clusters.provision_account(
        "test", account, [ns], "admin", admin=Credential.bearer(kube_cluster.admin_token), by=admin
    )
    clusters.add_grant("test", account, by=admin, user="alice", namespaces=[ns])
    bins = find_binaries()
    policy = [default_policy()]
    gateway = Gateway(
        rt,
        tools=Tools.find(bins.kubectl, bins.helm),
        clusters=clusters,
        policy=lambda: policy[0],
    )
    await gateway.start()
    alice = principal(rt, "alice")
    token = clusters.account_credential(clusters.resolve_access(alice, "test")).token
    try:
        yield Door(rt, gateway, kube_cluster, ns, alice, principal(rt, "bob"), token, policy,
                   tmp_path, account)  # fmt: skip
    finally:
        await gateway.close()
        rt.close()


class Collect:
    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, data: bytes) -> None:
        self.data += data

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


async def hold(session: BastionSession, line: str) -> tuple[int, asyncio.Future[Any], Collect]:
    """Start ``line`` and wait until it is held (its preview is made before the ticket)."""
    out = Collect()
    tickets: list[int] = []

    async def on_ticket(ticket: Any) -> None:
        tickets.append(ticket.id)

    task = asyncio.ensure_future(session.run(line, out, on_ticket=on_ticket))
    for _ in range(600):
        if tickets or task.done():
            break
        await asyncio.sleep(0.05)
    assert tickets, f"{line!r} was not held: {out.text}"
    return tickets[0], task, out


def writes_without_dry_run(rt: Runtime, session_id: str) -> list[dict[str, Any]]:
    """API requests of a session (and its preview twin) that were forwarded and could have
    changed something: writes without dryRun=All, and connections into pods."""
    found = []
    for d in audit_details(rt, "kubeproxy.request"):
        if not str(d.get("session_id", "")).startswith(session_id):
            continue
        if d.get("decision") not in ("allow", "warn"):
            continue
        mutating = d.get("verb") in ("create", "update", "patch", "delete", "deletecollection")
        if d.get("subresource") in ("exec", "attach", "portforward"):
            mutating = True
        dry = "dryRun=All" in str(d.get("query", ""))
        if d.get("method") == "DELETE" and isinstance(d.get("body"), dict):
            # the apiserver reads a DELETE's options from its body when it has one
            dry = (d["body"].get("json") or {}).get("dryRun") == ["All"]
        if mutating and not dry:
            found.append(d)
    return found


# 1. A review preview never changes the cluster ------------------------------------------------

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: registry.invalid/web:2}]}
"""
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: made}\ndata: {a: b}\n"

PREVIEWED = [
    # the issue's own cases: '--' makes kubectl read appended words as names
    'kubectl patch deployment web -p \'{"spec":{"replicas":0}}\' --',
    "kubectl patch deployment web --type=json"
    ' -p \'[{"op":"replace","path":"/spec/replicas","value":0}]\' --',
    'kubectl patch deployment web --type=merge -p \'{"spec":{"replicas":0}}\' -- web',
    "kubectl create deployment extra --image=registry.invalid/x:1 -- sleep 1",
    "kubectl delete --raw /apis/apps/v1/namespaces/NS/deployments/web",
    # every reviewed verb, with '--' and flags in every position
    "kubectl scale deployment web --replicas=0 --",
    "kubectl scale --replicas=0 -- deployment web",
    "kubectl --namespace NS scale deployment/web --replicas 0 --current-replicas=2",
    "kubectl delete deployment web --",
    "kubectl delete -- deployment web",
    "kubectl delete deployment -l app=web --wait=false",
    "kubectl delete configmaps --all --",
    "kubectl label deployment web tier=x --overwrite --",
    "kubectl annotate -- deployment web note=x",
    "kubectl set image deployment/web web=registry.invalid/web:3 --",
    "kubectl set env deployment/web A=1 --",
    "kubectl run podx --image=registry.invalid/x:1 --restart=Never -- sleep 1",
    "kubectl run podx --image=registry.invalid/x:1 --restart=Never",
    "kubectl create configmap made --from-literal=a=b --",
    "kubectl create -f cm.yaml --",
    "kubectl apply -f web.yaml",
    "kubectl apply -f web.yaml --server-side --",
    "kubectl replace -f web.yaml --",
    "kubectl rollout restart deployment web",
    "kubectl create token default",
    "kubectl create rolebinding rb --clusterrole=admin --serviceaccount=NS:default --",
    "kubectl create secret generic s1 --from-literal=a=b",
    "kubectl delete pods -l app=web -- podx",
    # the rest of the pack's reviewed verbs
    "kubectl exec web-0 -- id",
    "kubectl cp web-0:/etc/hostname ./hostname",
    "kubectl debug web-0 --image=registry.invalid/x:1 -- sh",
    "kubectl port-forward pod/web-0 8080:80",
    "kubectl run podo --image=registry.invalid/x:1 --overrides='{\"spec\":{}}'",
    "kubectl drain node-1 --ignore-daemonsets --",
    "kubectl taint nodes node-1 a=b:NoSchedule --",
    "kubectl auth reconcile -f role.yaml --",
    "kubectl apply -f web.yaml --prune -l app=web",
    "kubectl delete clusterrole x --",
    "helm uninstall web",
    "helm rollback web 1",
]


async def test_previews_never_change_the_cluster(door: Door) -> None:
    d = door
    d.reset()
    d.kube.kubectl("-n", d.ns, "create", "deployment", "web", "--image=registry.invalid/web:1",
                   "--replicas=2")  # fmt: skip
    d.kube.kubectl("-n", d.ns, "create", "configmap", "keep", "--from-literal=k=v")
    d.kube.kubectl("-n", d.ns, "run", "web-0", "--image=registry.invalid/x:1", "--restart=Never")
    d.policy[0] = default_policy().merged(REVIEW_EVERYTHING)
    session = await d.gateway.open_session(d.alice, "test")
    try:
        session.put_file("web.yaml", DEPLOY.encode(), by=d.alice)
        session.put_file("cm.yaml", CONFIGMAP.encode(), by=d.alice)
        session.put_file("role.yaml", STAR_ROLE.encode(), by=d.alice)
        before = d.snapshot()
        assert "Deployment/web" in before and "ConfigMap/keep" in before
        for line in PREVIEWED:
            line = line.replace("NS", d.ns)
            ticket_id, task, out = await hold(session, line)
            # the preview is made: nothing changed on the cluster while the ticket is pending
            assert d.snapshot() == before, f"{line!r} changed the cluster before approval"
            ticket = d.gateway.reviews.get(ticket_id)
            assert ticket.has_preview
            assert d.token not in ticket.preview_text()
            d.gateway.reviews.deny(ticket_id, d.bob, reason="test")
            result = await asyncio.wait_for(task, 60)
            assert result.exit_code == EXIT_REFUSED, out.text
            assert d.snapshot() == before, f"{line!r} changed the cluster"
        # the proxy's audit: nothing sent that could change anything, only dry runs
        leaks = writes_without_dry_run(d.rt, session.info.session_id)
        assert leaks == [], [
            (r["session_id"], r["method"], r["path"], r["query"], r["decision"], r["status"])
            for r in leaks
        ]
        previews = [
            r
            for r in audit_details(d.rt, "kubeproxy.request")
            if r.get("session_id") == f"{session.info.session_id}.preview"
        ]
        assert previews, "no preview reached the API"
        assert any("dryRun=All" in str(r.get("query")) for r in previews)
        # what the preview was refused, it was refused as a preview
        for r in previews:
            if r["decision"] == "deny" and r["verb"] in ("create", "update", "patch", "delete"):
                assert "dryRun=All" in str(r["query"]) or r["rule"] == "preview.dry-run-only"
    finally:
        await session.close()


async def test_the_preview_credential_refuses_writes_whatever_kubectl_was_told(
    door: Door,
) -> None:
    """The guarantee does not depend on how the preview argv was built: the session's preview
    kubeconfig itself cannot change anything (a write without a dry run, exec, a raw DELETE)."""
    d = door
    d.reset()
    d.kube.kubectl("-n", d.ns, "create", "configmap", "pv", "--from-literal=k=v")
    session = await d.gateway.open_session(d.alice, "test")
    try:
        environ = session.env.preview_env
        assert environ is not None
        kubectl = str(find_binaries().kubectl)

        def k(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [kubectl, "-n", d.ns, *args],
                capture_output=True,
                text=True,
                timeout=60,
                env=dict(environ),
                cwd=session.env.workspace,
            )

        before = d.snapshot()
        for args in (
            ("delete", "configmap", "pv"),
            ("delete", "--raw", f"/api/v1/namespaces/{d.ns}/configmaps/pv"),
            ("label", "configmap", "pv", "a=b"),
            ("create", "configmap", "pv2", "--from-literal=a=b"),
            ("patch", "configmap", "pv", "-p", '{"data":{"k":"w"}}', "--", "x"),
        ):
            r = await asyncio.to_thread(k, *args)
            assert r.returncode != 0, (args, r.stdout)
            assert "preview.dry-run-only" in r.stderr, (args, r.stderr)
        r = await asyncio.to_thread(k, "label", "configmap", "pv", "a=b", "--dry-run=server")
        assert r.returncode == 0, r.stderr
        r = await asyncio.to_thread(k, "get", "configmap", "pv", "-o", "name")
        assert r.returncode == 0, r.stderr
        assert d.snapshot() == before
    finally:
        await session.close()


# 3. No credential can be minted that works outside Casemate -----------------------------------

SA_TOKEN_SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: minted
  annotations: {kubernetes.io/service-account.name: default}
type: kubernetes.io/service-account-token
"""
CSR = """\
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: minted-csr}
spec:
  request: >-
    LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KLS0tLS1FTkQgQ0VSVElGSUNB
    VEUgUkVRVUVTVC0tLS0tCg==
  signerName: kubernetes.io/kube-apiserver-client
  usages: [client auth]
"""
BIND_ADMIN = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: sa-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: ServiceAccount, name: default}]
"""
STAR_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: star}
rules: [{apiGroups: ["*"], resources: ["*"], verbs: ["*"]}]
"""


async def test_no_credential_can_be_minted_through_an_issued_kubeconfig(door: Door) -> None:
    d = door
    d.reset()
    k = await d.kubeconfig()
    # a service-account-token Secret, however it is sent
    for args in (("create", "-f", "-"), ("apply", "--server-side", "-f", "-")):
        r = await asyncio.to_thread(k, *args, stdin=SA_TOKEN_SECRET)
        assert r.returncode != 0 and "api.secret-token-type" in r.stderr, (args, r.stderr)
    # client-side apply reads the Secret first: refused already (Secrets are never read)
    r = await asyncio.to_thread(k, "apply", "-f", "-", stdin=SA_TOKEN_SECRET)
    assert r.returncode != 0 and "api.secret-read" in r.stderr, r.stderr
    r = await asyncio.to_thread(k, "create", "token", "default")
    assert r.returncode != 0 and "api.serviceaccount-token" in r.stderr, r.stderr
    r = await asyncio.to_thread(k, "create", "-f", "-", stdin=CSR)
    assert r.returncode != 0 and "Forbidden" in r.stderr, r.stderr
    r = await asyncio.to_thread(k, "certificate", "approve", "minted-csr")
    assert r.returncode != 0
    # a binding to a role holding escalate/bind/impersonate/* waits for a reviewer
    r = await asyncio.to_thread(k, "create", "-f", "-", stdin=BIND_ADMIN)
    assert r.returncode != 0 and "held for review as ticket" in r.stderr, r.stderr
    r = await asyncio.to_thread(k, "create", "-f", "-", stdin=STAR_ROLE)
    assert r.returncode != 0 and "held for review as ticket" in r.stderr, r.stderr
    r = await asyncio.to_thread(
        k, "create", "rolebinding", "viewer", "--clusterrole=view", "--serviceaccount=x:default"
    )
    assert r.returncode == 0, r.stderr
    # nothing of the chain exists on the cluster
    objects = d.snapshot()
    assert "Secret/minted" not in objects
    assert "RoleBinding/sa-admin" not in objects and "Role/star" not in objects
    csrs = d.kube.kubectl("get", "csr", "-o", "name").stdout
    assert "minted-csr" not in csrs
    # the system account itself could have done it: the guard is Casemate, not RBAC
    sa = f"system:serviceaccount:casemate-system:casemate-{d.account}"
    for what in ("secrets", "rolebindings", "serviceaccounts/token"):
        can = d.kube.kubectl("auth", "can-i", "create", what, "-n", d.ns, f"--as={sa}")
        assert can.stdout.strip() == "yes", what


async def test_no_credential_can_be_minted_through_the_shell(door: Door) -> None:
    d = door
    d.reset()
    session = await d.gateway.open_session(d.alice, "test")
    try:
        session.put_file("token.yaml", SA_TOKEN_SECRET.encode(), by=d.alice)
        out = Collect()
        result = await session.run("kubectl create -f token.yaml", out)
        assert result.exit_code != 0
        assert "api.secret-token-type" in out.text, out.text
        assert "Secret/minted" not in d.snapshot()
        # a binding to a powerful role goes through only once a reviewer approved it
        line = (
            "kubectl create rolebinding sa-admin --clusterrole=admin"
            f" --serviceaccount={d.ns}:default"
        )
        ticket_id, task, out = await hold(session, line)
        assert "RoleBinding/sa-admin" not in d.snapshot()
        d.gateway.reviews.approve(ticket_id, d.bob)
        result = await asyncio.wait_for(task, 60)
        assert result.exit_code == 0, out.text
        assert "RoleBinding/sa-admin" in d.snapshot()
        d.kube.kubectl("-n", d.ns, "delete", "rolebinding", "sa-admin")
    finally:
        await session.close()


# 2. Secret data stays secret ------------------------------------------------------------------


async def test_secret_data_is_never_returned_at_the_api_layer(door: Door) -> None:
    d = door
    d.reset()
    value = "tr0ub4dor-" + secrets.token_hex(8)
    d.kube.kubectl("-n", d.ns, "create", "secret", "generic", "db", f"--from-literal=pw={value}")
    k = await d.kubeconfig()
    for args in (
        ("get", "secret", "db", "-o", "yaml"),
        ("get", "secret", "db", "-o", "jsonpath={.data.pw}"),
        ("get", "secrets", "-o", "json"),
        ("describe", "secret", "db"),
        ("get", "--raw", f"/api/v1/namespaces/{d.ns}/secrets/db"),
        ("get", "secrets", "--field-selector", "metadata.name=db", "-o", "yaml"),
        ("get", "secrets", "-l", "owner!=helm", "-o", "yaml"),
        ("get", "secrets", "-w", "--request-timeout=2s", "-o", "yaml"),
        ("label", "secret", "db", "seen=yes", "-o", "yaml"),
        ("patch", "secret", "db", "-p", '{"metadata":{"labels":{"a":"b"}}}', "-o", "yaml"),
    ):
        r = await asyncio.to_thread(k, *args)
        assert value not in r.stdout + r.stderr, args
        assert r.returncode != 0, args
    import base64

    encoded = base64.b64encode(value.encode()).decode()
    for row in audit_details(d.rt, "kubeproxy.request"):
        assert value not in json.dumps(row) and encoded not in json.dumps(row)
    # tickets of held Secret writes show no data either
    for ticket in d.gateway.reviews.list_tickets(user="alice", limit=50):
        full = d.gateway.reviews.get(ticket.id)
        assert value not in full.preview_text() and encoded not in full.preview_text()


# 4. One policy at every door -------------------------------------------------------------------

PRIVILEGED_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: breakout}
spec:
  hostPID: true
  containers:
  - name: c
    image: registry.invalid/x:1
    securityContext: {privileged: true}
"""
HOSTPATH_DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: hp}
spec:
  selector: {matchLabels: {app: hp}}
  template:
    metadata: {labels: {app: hp}}
    spec:
      containers: [{name: c, image: registry.invalid/x:1}]
      volumes: [{name: root, hostPath: {path: /}}]
"""

# (shell line, kubectl args for the issued kubeconfig, stdin file, expected class)
DIFFERENTIAL = [
    ("kubectl delete namespace NS", ("delete", "namespace", "NS"), None, "refused"),
    ("kubectl scale deployment web --replicas=0", ("scale", "deployment", "web",
                                                   "--replicas=0"), None, "held"),
    ("kubectl patch deployment web -p '{\"spec\":{\"replicas\":0}}'",
     ("patch", "deployment", "web", "-p", '{"spec":{"replicas":0}}'), None, "held"),
    ("kubectl get secret db -o yaml", ("get", "secret", "db", "-o", "yaml"), None, "refused"),
    ("kubectl describe secret db", ("describe", "secret", "db"), None, "refused"),
    ("kubectl exec web-0 -- id", ("exec", "web-0", "--", "id"), None, "held"),
    ("kubectl run priv --image=registry.invalid/x:1 --privileged",
     ("run", "priv", "--image=registry.invalid/x:1", "--privileged"), None, "refused"),
    ("kubectl create deployment fine --image=registry.invalid/x:1",
     ("create", "deployment", "fine2", "--image=registry.invalid/x:1"), None, "allowed"),
    ("kubectl create -f pod.yaml", ("create", "-f", "-"), PRIVILEGED_POD, "refused"),
    ("kubectl apply -f hp.yaml", ("apply", "-f", "-"), HOSTPATH_DEPLOY, "refused"),
    ("kubectl create clusterrolebinding x --clusterrole=cluster-admin --user=alice",
     ("create", "clusterrolebinding", "x", "--clusterrole=cluster-admin", "--user=alice"), None,
     "refused-or-held"),
    ("kubectl create rolebinding rb1 --clusterrole=admin --serviceaccount=NS:default",
     ("create", "rolebinding", "rb1", "--clusterrole=admin", "--serviceaccount=NS:default"),
     None, "held"),
    ("kubectl create role r1 '--verb=*' --resource=pods",
     ("create", "role", "r1", "--verb=*", "--resource=pods"), None, "held"),
    ("kubectl create token default", ("create", "token", "default"), None, "refused"),
    ("kubectl certificate approve csr-1", ("certificate", "approve", "csr-1"), None, "refused"),
    ("kubectl get configmaps", ("get", "configmaps"), None, "allowed"),
    ("kubectl scale deployment web --replicas=3", ("scale", "deployment", "web",
                                                   "--replicas=3"), None, "allowed"),
]  # fmt: skip


def _shell_class(code: int, text: str) -> str:
    if "waiting for approval" in text:
        return "held"
    if "refused" in text or code == EXIT_REFUSED or "forbidden" in text.lower():
        return "refused"
    return "allowed" if code == 0 else "failed"


def _api_class(r: subprocess.CompletedProcess[str]) -> str:
    if "held for review as ticket" in r.stderr:
        return "held"
    if r.returncode != 0 and "forbidden" in r.stderr.lower():
        return "refused"
    return "allowed" if r.returncode == 0 else "failed"


async def test_the_shell_and_an_issued_kubeconfig_decide_alike(door: Door) -> None:
    d = door
    d.reset()
    d.kube.kubectl("-n", d.ns, "create", "deployment", "web", "--image=registry.invalid/web:1",
                   "--replicas=2")  # fmt: skip
    d.kube.kubectl("-n", d.ns, "create", "secret", "generic", "db", "--from-literal=pw=x")
    d.kube.kubectl("-n", d.ns, "run", "web-0", "--image=registry.invalid/x:1", "--restart=Never")
    k = await d.kubeconfig()
    session = await d.gateway.open_session(d.alice, "test")
    try:
        session.put_file("pod.yaml", PRIVILEGED_POD.encode(), by=d.alice)
        session.put_file("hp.yaml", HOSTPATH_DEPLOY.encode(), by=d.alice)
        for line, args, stdin, expected in DIFFERENTIAL:
            line = line.replace("NS", d.ns)
            args = tuple(a.replace("NS", d.ns) for a in args)
            out = Collect()
            task = asyncio.ensure_future(session.run(line, out))
            for _ in range(400):
                if task.done() or "waiting for approval" in out.text:
                    break
                await asyncio.sleep(0.05)
            if not task.done():
                for ticket in d.gateway.reviews.list_tickets(user="alice", limit=20):
                    if ticket.state.value == "pending":
                        d.gateway.reviews.deny(ticket.id, d.bob, reason="test")
            result = await asyncio.wait_for(task, 60)
            shell = _shell_class(result.exit_code, out.text)
            api = _api_class(await asyncio.to_thread(k, *args, stdin=stdin))
            wanted = {"refused", "held"} if expected == "refused-or-held" else {expected}
            assert shell in wanted, (line, out.text)
            assert api in wanted, (args, api)
            if expected != "refused-or-held":
                assert shell == api, (line, shell, api)
        objects = d.snapshot()
        assert "Pod/breakout" not in objects and "Deployment/hp" not in objects
    finally:
        await session.close()


SITE_API_RULES = """\
version: 1
default_action: reject
rules: []
api_rules:
  version: 1
  rules:
    - id: site.no-configmap-reads
      priority: 2000
      action: deny
      description: Configmaps are off limits here.
      match: {verbs: [read], resources: [configmaps]}
"""


async def test_operators_change_the_api_rules_with_the_policy(door: Door) -> None:
    """The API rules in force come from the policy's api_rules section, for both doors, and
    change without a restart; an unusable section refuses every API request."""
    d = door
    d.reset()
    d.kube.kubectl("-n", d.ns, "create", "configmap", "cm1", "--from-literal=a=b")
    k = await d.kubeconfig()
    r = await asyncio.to_thread(k, "get", "configmaps", "-o", "name")
    assert r.returncode == 0 and "configmap/cm1" in r.stdout, r.stderr
    d.policy[0] = default_policy().merged(Policy.from_yaml(SITE_API_RULES))
    session = await d.gateway.open_session(d.alice, "test")
    try:
        r = await asyncio.to_thread(k, "get", "configmaps", "-o", "name")
        assert r.returncode != 0 and "site.no-configmap-reads" in r.stderr, r.stderr
        out = Collect()
        await session.run("kubectl get configmaps -o name", out)
        assert "site.no-configmap-reads" in out.text, out.text
        r = await asyncio.to_thread(k, "get", "deployments", "-o", "name")
        assert r.returncode == 0, r.stderr  # the built-in rules still apply
        # an api_rules section that does not validate: every API request is refused
        broken = SITE_API_RULES.replace("action: deny", "action: maybe")
        d.policy[0] = default_policy().merged(Policy.from_yaml(broken))
        r = await asyncio.to_thread(k, "get", "deployments", "-o", "name")
        assert r.returncode != 0 and "no API rules could be loaded" in r.stderr, r.stderr
        d.policy[0] = default_policy()
        r = await asyncio.to_thread(k, "get", "configmaps", "-o", "name")
        assert r.returncode == 0 and "configmap/cm1" in r.stdout, r.stderr
    finally:
        await session.close()


LOOKUP_CM = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-copy
data:
  copied: {{ (lookup "v1" "Secret" .Release.Namespace "db").data | toJson | quote }}
"""


async def test_helm_lookup_reads_no_secret_at_any_door(door: Door) -> None:
    """helm's lookup (in template --dry-run=server, install --dry-run=server and a real
    install) reads Secrets through the API: refused, so nothing of the Secret reaches the
    output or a ConfigMap the user could read; helm's own release records still work."""
    import base64

    d = door
    d.reset()
    value = "lookup-" + secrets.token_hex(8)
    encoded = base64.b64encode(value.encode()).decode()
    d.kube.kubectl("-n", d.ns, "create", "secret", "generic", "db", f"--from-literal=pw={value}")
    session = await d.gateway.open_session(d.alice, "test")
    outputs: list[str] = []
    try:
        chart = session.env.workspace / "peek"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: peek\nversion: 0.1.0\n")
        (chart / "templates" / "cm.yaml").write_text(LOOKUP_CM)
        for line in (
            "helm template peek ./peek --dry-run=server",
            "helm install peek ./peek --dry-run=server",
            "helm install peek ./peek",
        ):
            out = Collect()
            await session.run(line, out)
            outputs.append(out.text)
        # helm itself still works where it reads only its own release records
        out = Collect()
        await session.run("helm list", out)
        assert out.text.strip().startswith("NAME"), out.text
    finally:
        await session.close()
    for text in outputs:
        assert value not in text and encoded not in text, text
    configmaps = d.kube.kubectl("-n", d.ns, "get", "configmaps", "-o", "json").stdout
    assert value not in configmaps and encoded not in configmaps
    assert any("api.secret-read" in text for text in outputs), outputs
