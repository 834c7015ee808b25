"""The bastion end to end against the real cluster (RBAC on): sessions, the command policy,
review, helm from the workspace, grants, and what is left behind."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from casemate.bastion.runner import EXIT_REFUSED
from casemate.core.models import AuditRecord
from casemate.errors import Denied, InvalidInput
from casemate.gateway.service import BastionSession
from casemate.testenv.kube import find_binaries
from tests.gateway.conftest import Bastion

pytestmark = pytest.mark.k8s


class Collect:
    def __init__(self) -> None:
        self.data = b""

    async def __call__(self, data: bytes) -> None:
        self.data += data

    @property
    def text(self) -> str:
        return self.data.decode()


async def run(session: BastionSession, line: str) -> tuple[int, str]:
    out = Collect()
    result = await session.run(line, out)
    return result.exit_code, out.text


def audit_kinds(b: Bastion, kind: str) -> list[dict[str, object]]:
    with b.rt.db.reader() as s:
        rows = s.scalars(select(AuditRecord).where(AuditRecord.kind == kind)).all()
        return [json.loads(r.body)["details"] for r in rows]


async def test_a_grant_for_namespace_a_lists_pods_there_and_is_forbidden_in_b(
    bastion: Bastion,
) -> None:
    b = bastion
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", "hello", "--from-literal=k=v")
    session = await b.gateway.open_session(b.alice, b.cluster, channel="exec")
    try:
        code, out = await run(session, "kubectl get configmaps")
        assert code == 0, out
        assert "hello" in out
        code, out = await run(session, f"kubectl get pods -n {b.ns_b}")
        assert code != 0
        assert "Forbidden" in out
        code, out = await run(session, "kubectl get configmaps -o name | grep hello | wc -l")
        assert code == 0 and out.strip() == "1", out
    finally:
        await session.close()
    assert not session.env.root.exists()
    decided = audit_kinds(b, "bastion.command.decided")
    finished = audit_kinds(b, "bastion.command.finished")
    assert len(decided) == 3 and len(finished) == 3
    assert any("hello" in str(f["output"]) for f in finished)


async def test_delete_namespace_is_refused_before_anything_runs(bastion: Bastion) -> None:
    b = bastion
    session = await b.gateway.open_session(b.alice, b.cluster)
    try:
        code, out = await run(session, f"kubectl delete namespace {b.ns_a}")
        assert code == EXIT_REFUSED
        assert "refused" in out
    finally:
        await session.close()
    ns = b.kube.kubectl("get", "namespace", b.ns_a, "-o", "jsonpath={.status.phase}")
    assert "Active" in str(ns)
    decided = audit_kinds(b, "bastion.command.decided")
    assert decided[-1]["decision"] == "reject"
    assert not audit_kinds(b, "bastion.command.finished")


async def test_a_reviewed_scale_runs_only_after_approval(bastion: Bastion) -> None:
    b = bastion
    b.kube.kubectl(
        "-n",
        b.ns_a,
        "create",
        "deployment",
        "web",
        "--image=registry.invalid/web:1",
        "--replicas=2",
    )
    session = await b.gateway.open_session(b.alice, b.cluster)
    tickets: list[int] = []

    async def on_ticket(ticket: object) -> None:
        tickets.append(ticket.id)  # type: ignore[attr-defined]

    out = Collect()
    task = asyncio.ensure_future(
        session.run("kubectl scale deployment web --replicas=0", out, on_ticket=on_ticket)
    )
    try:
        for _ in range(200):
            if tickets:
                break
            await asyncio.sleep(0.05)
        assert tickets, out.text
        assert "waiting for approval" in out.text
        replicas = b.kube.kubectl(
            "-n", b.ns_a, "get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"
        )
        assert "2" in str(replicas)  # held: nothing changed yet
        ticket = b.gateway.reviews.get(tickets[0])
        assert isinstance(ticket.preview, str)
        # the approver sees what would change: a diff of the object now and after a dry run
        assert "-  replicas: 2" in ticket.preview and "+  replicas: 0" in ticket.preview
        with pytest.raises(Denied):
            b.gateway.reviews.approve(tickets[0], b.alice)  # four eyes
        b.gateway.reviews.approve(tickets[0], b.approver)
        result = await asyncio.wait_for(task, 60)
        assert result.exit_code == 0, out.text
        assert result.approver == "bob"
    finally:
        if not task.done():
            task.cancel()
        await session.close()
    replicas = b.kube.kubectl(
        "-n", b.ns_a, "get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"
    )
    assert "0" in str(replicas)


async def test_a_denied_review_never_runs(bastion: Bastion) -> None:
    b = bastion
    b.kube.kubectl(
        "-n",
        b.ns_a,
        "create",
        "deployment",
        "api",
        "--image=registry.invalid/api:1",
        "--replicas=1",
    )
    session = await b.gateway.open_session(b.alice, b.cluster)
    tickets: list[int] = []

    async def on_ticket(ticket: object) -> None:
        tickets.append(ticket.id)  # type: ignore[attr-defined]

    out = Collect()
    try:
        task = asyncio.ensure_future(
            session.run("kubectl scale deployment api --replicas=0", out, on_ticket=on_ticket)
        )
        for _ in range(200):
            if tickets:
                break
            await asyncio.sleep(0.05)
        b.gateway.reviews.deny(tickets[0], b.approver, reason="not today")
        result = await asyncio.wait_for(task, 30)
        assert result.exit_code == EXIT_REFUSED
        assert "not today" in out.text
    finally:
        await session.close()
    replicas = b.kube.kubectl(
        "-n", b.ns_a, "get", "deployment", "api", "-o", "jsonpath={.spec.replicas}"
    )
    assert "1" in str(replicas)


async def test_helm_installs_a_chart_from_the_workspace(bastion: Bastion) -> None:
    b = bastion
    session = await b.gateway.open_session(b.alice, b.cluster)
    try:
        chart = session.env.workspace / "demo"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
        (chart / "templates" / "cm.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n"
            "data:\n  greeting: hi\n"
        )
        code, out = await run(session, "helm install demo ./demo")
        assert code == 0, out
        assert "STATUS: deployed" in out
        code, out = await run(session, "kubectl get configmap demo-cfg -o name")
        assert code == 0 and "configmap/demo-cfg" in out, out
    finally:
        await session.close()
    decided = audit_kinds(b, "bastion.command.decided")
    helm = next(d for d in decided if str(d["line"]).startswith("helm install"))
    assert helm["manifests"], "the rendered chart is stored by content"


async def test_an_expired_grant_cannot_connect(bastion: Bastion) -> None:
    b = bastion
    admin = b.alice  # not an admin: grants need one
    from tests.gateway.conftest import principal

    admin = principal(b.rt, "admin")
    b.rt.identity.create_user("carol", by=admin, password="Orchid-Falcon-Tundra-58")
    grant = b.clusters.add_grant(
        b.cluster,
        b.account,
        by=admin,
        user="carol",
        namespaces=[b.ns_a],
        expires_at=datetime.now(UTC) + timedelta(seconds=2),
    )
    assert grant
    carol = principal(b.rt, "carol")
    session = await b.gateway.open_session(carol, b.cluster)
    await session.close()
    await asyncio.sleep(2.5)
    with pytest.raises(Denied):
        await b.gateway.open_session(carol, b.cluster)


async def test_no_grant_no_session_and_foreign_namespace_refused(bastion: Bastion) -> None:
    b = bastion
    with pytest.raises(Denied):
        await b.gateway.open_session(b.approver, b.cluster)
    with pytest.raises(Denied):
        await b.gateway.open_session(b.alice, b.cluster, namespace=b.ns_b)


async def test_kubeconfig_for_own_tools_goes_through_the_api_layer(
    bastion: Bastion, tmp_path: Path
) -> None:
    b = bastion
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", "kc-one", "--from-literal=k=v")
    text, expires = await b.gateway.issue_kubeconfig(b.alice, b.cluster)
    assert expires > datetime.now(UTC)
    assert b.token not in text
    path = tmp_path / "kc"
    path.write_text(text)
    kubectl = str(find_binaries().kubectl)

    def k(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl, "--kubeconfig", str(path), *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    r = await asyncio.to_thread(k, "get", "configmaps", "-o", "name")
    assert r.returncode == 0 and "configmap/kc-one" in r.stdout, r.stderr
    r = await asyncio.to_thread(k, "get", "pods", "-n", b.ns_b)
    assert r.returncode != 0 and "Forbidden" in r.stderr
    # a delete-collection needs review: held as a ticket, then released once after approval
    raw = f"/api/v1/namespaces/{b.ns_a}/configmaps"
    r = await asyncio.to_thread(k, "delete", "--raw", raw)
    assert r.returncode != 0 and "held for review as ticket" in r.stderr, r.stderr
    ticket_id = int(r.stderr.split("ticket ")[1].split()[0])
    assert b.gateway.reviews.get(ticket_id).user == "alice"
    b.gateway.reviews.approve(ticket_id, b.approver)
    r = await asyncio.to_thread(k, "delete", "--raw", raw)
    assert r.returncode == 0, r.stderr
    r = await asyncio.to_thread(k, "get", "configmaps", "-o", "name")
    assert "kc-one" not in r.stdout
    r = await asyncio.to_thread(k, "delete", "--raw", raw)  # the approval was used once
    assert r.returncode != 0 and "held for review" in r.stderr


async def test_the_policy_sees_what_an_uploaded_manifest_holds(bastion: Bastion) -> None:
    b = bastion
    session = await b.gateway.open_session(b.alice, b.cluster)
    tickets: list[int] = []

    async def on_ticket(ticket: object) -> None:
        tickets.append(ticket.id)  # type: ignore[attr-defined]

    try:
        with pytest.raises(InvalidInput):
            session.put_file("../escape.yaml", b"x", by=b.alice)
        with pytest.raises(InvalidInput):
            session.put_file("/etc/x.yaml", b"x", by=b.alice)
        # an innocent name, a ClusterRoleBinding inside: never applied without a reviewer
        session.put_file(
            "app/innocent.yaml",
            b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n"
            b"metadata: {name: me-admin}\nroleRef: {apiGroup: rbac.authorization.k8s.io, "
            b"kind: ClusterRole, name: cluster-admin}\nsubjects: [{kind: User, name: alice, "
            b"apiGroup: rbac.authorization.k8s.io}]\n",
            by=b.alice,
        )
        out = Collect()
        task = asyncio.ensure_future(
            session.run("kubectl apply -f app/innocent.yaml", out, on_ticket=on_ticket)
        )
        for _ in range(200):
            if tickets or task.done():
                break
            await asyncio.sleep(0.05)
        assert tickets or (task.done() and task.result().exit_code == EXIT_REFUSED), out.text
        if tickets:
            b.gateway.reviews.deny(tickets[0], b.approver, reason="no")
        result = await asyncio.wait_for(task, 30)
        assert result.exit_code == EXIT_REFUSED
    finally:
        await session.close()
    r = b.kube.kubectl("get", "clusterrolebinding", "me-admin", check=False)
    assert r.returncode != 0
    decided = audit_kinds(b, "bastion.command.decided")
    assert decided[-1]["manifests"], "the manifest is stored by content"


async def test_output_redirected_into_the_workspace_and_applied_back(bastion: Bastion) -> None:
    """``> FILE`` writes the workspace (0600, audited), ``>>`` appends, the file feeds a later
    ``apply -f``; every target outside the workspace, or through a link, is refused unrun."""
    b = bastion
    b.kube.kubectl("-n", b.ns_a, "create", "configmap", "redir-src", "--from-literal=k=v1")
    session = await b.gateway.open_session(b.alice, b.cluster)
    ws = session.env.workspace
    outside = Path(session.env.root).parent / "redirect-outside"
    try:
        code, out = await run(session, "kubectl get configmap redir-src -o yaml > cm.yaml")
        assert code == 0 and out == "", out  # the output went to the file, not the terminal
        written = ws / "cm.yaml"
        assert "name: redir-src" in written.read_text()
        assert written.stat().st_mode & 0o777 == 0o600
        edited = written.read_text().replace("k: v1", "k: v2")
        written.write_text(edited)
        code, out = await run(session, "kubectl apply -f cm.yaml")
        assert code == 0, out
        got = b.kube.kubectl("-n", b.ns_a, "get", "cm", "redir-src", "-o", "jsonpath={.data.k}")
        assert got.stdout == "v2"
        code, out = await run(session, "kubectl get configmap redir-src -o name >> cm.yaml")
        assert code == 0, out
        assert written.read_text().endswith("configmap/redir-src\n")
        # standard error still reaches the user; the file gets only standard output
        code, out = await run(session, "kubectl get configmap no-such-cm > missing.txt")
        assert code != 0 and "not found" in out, out
        assert (ws / "missing.txt").read_text() == ""

        os.symlink(outside, ws / "link.txt")
        refused = {
            "kubectl get configmaps > ../kubeconfig": "outside the session workspace",
            f"kubectl get configmaps > {outside}": "outside the session workspace",
            "kubectl get configmaps > link.txt": "symbolic link",
            "kubectl get configmaps > nodir/x": "no such directory",
        }
        for line, reason in refused.items():
            code, out = await run(session, line)
            assert code == EXIT_REFUSED and reason in out, (line, out)
        assert not outside.exists()
        kubeconfig = session.env.kubeconfig.read_text()
        assert "configmap" not in kubeconfig
    finally:
        await session.close()
    decided = [d for d in audit_kinds(b, "bastion.command.decided") if "cm.yaml" in str(d["line"])]
    assert any(str(d["line"]).endswith("> cm.yaml") for d in decided)
    finished = [
        f
        for f in audit_kinds(b, "bastion.command.finished")
        if str(f["line"]).endswith("> cm.yaml")
    ]
    assert finished and "name: redir-src" in str(finished[0]["output"])  # audited all the same


async def test_a_redirected_output_is_capped(bastion: Bastion) -> None:
    b = bastion
    session = await b.gateway.open_session(b.alice, b.cluster)
    runner = b.gateway.runner
    original = runner.limits
    runner.limits = replace(original, max_redirect_bytes=300)
    try:
        code, out = await run(session, "kubectl api-resources > big.txt")
        assert code == 1 and "stopped (the file holds the first 300 bytes)" in out, out
        assert (session.env.workspace / "big.txt").stat().st_size == 300
    finally:
        runner.limits = original
        await session.close()
