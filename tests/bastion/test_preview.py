"""Review previews are built from the parsed command (never the user's words with flags
appended), and commands without a safe dry run get none."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from casemate.bastion.kubectl import parse_command
from casemate.bastion.kubepreview import preview_argv
from casemate.bastion.models import ReviewTicket
from casemate.bastion.previewmask import redact_preview
from casemate.bastion.review import ReviewService
from casemate.core.audit import AuditLog
from casemate.core.db import Database

# Built from the parse ---------------------------------------------

_WS = "/work/session"


def _preview(line: str) -> tuple[str, ...] | str:
    return preview_argv(parse_command(shlex.split(line), workspace=_WS), _WS)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # words after '--' are names to kubectl: they stay names, the dry run stays a flag
        (
            'kubectl patch deploy app -p \'{"spec":{"replicas":0}}\' --',
            (
                "patch",
                "deployments/app",
                '--patch={"spec":{"replicas":0}}',
                "--dry-run=server",
                "--output=yaml",
            ),
        ),
        (
            "kubectl patch deploy app --type=json -p '[]' --",
            (
                "patch",
                "deployments/app",
                "--type=json",
                "--patch=[]",
                "--dry-run=server",
                "--output=yaml",
            ),
        ),
        (
            "kubectl patch deploy app -p '{}' -- other",
            (
                "patch",
                "deployments/app",
                "deployments/other",
                "--patch={}",
                "--dry-run=server",
                "--output=yaml",
            ),
        ),
        (
            "kubectl scale --replicas=0 -- deploy web",
            ("scale", "deployments/web", "--replicas=0", "--dry-run=server", "--output=yaml"),
        ),
        (
            "kubectl delete -- deploy web",
            ("delete", "deployments/web", "--dry-run=server"),
        ),
        # a name that looks like a flag stays a name (TYPE/NAME), never a flag
        ("kubectl delete -- deploy -x", ("delete", "deployments/-x", "--dry-run=server")),
        (
            "kubectl patch deploy web -p '{}' -- --namespace=kube-system",
            (
                "patch",
                "deployments/web",
                "deployments/--namespace=kube-system",
                "--patch={}",
                "--dry-run=server",
                "--output=yaml",
            ),
        ),
        (
            "kubectl -n x delete po,svc -l app=web --wait=false",
            (
                "delete",
                "pods,services",
                "--namespace=x",
                "--selector=app=web",
                "--wait=false",
                "--dry-run=server",
            ),
        ),
        (
            "kubectl delete deploy web --dry-run=none -o name",
            ("delete", "deployments/web", "--dry-run=server"),
        ),
        (
            "kubectl -v=5 label deploy web a=b --overwrite -o json",
            (
                "label",
                "deployments/web",
                "a=b",
                "--overwrite=true",
                "--dry-run=server",
                "--output=yaml",
            ),
        ),
        (
            "kubectl drain node1 --ignore-daemonsets",
            ("drain", "node1", "--ignore-daemonsets=true", "--dry-run=server"),
        ),
        (
            "kubectl apply -f app.yaml --prune -l a=b",
            ("diff", "--filename=app.yaml", "--selector=a=b"),
        ),
        (
            "kubectl create -f app.yaml --",
            ("create", "--filename=app.yaml", "--dry-run=server", "--output=yaml"),
        ),
    ],
)
def test_preview_argv_is_rebuilt_from_the_parse(line: str, expected: tuple[str, ...]) -> None:
    assert _preview(line) == expected


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("kubectl delete --raw /apis/apps/v1/namespaces/a/deployments/web", "--raw"),
        ("kubectl create deployment web --image=nginx -- sleep 1", "after '--'"),
        ("kubectl run x --image=nginx -- sh -c id", "after '--'"),
        ("kubectl exec web -- id", "after '--'"),
        ("kubectl create token sa", "no server-side dry run"),
        ("kubectl certificate approve csr-1", "no server-side dry run"),
        ("kubectl port-forward pod/web 8080:80", "no server-side dry run"),
        ("kubectl rollout restart deploy web", "no server-side dry run"),
        ("kubectl drain -- -node", "looks like a flag"),
        ("helm uninstall web", "helm"),
        ("helm rollback web 1", "helm"),
    ],
)
def test_commands_without_a_safe_preview(line: str, reason: str) -> None:
    result = _preview(line)
    assert isinstance(result, str) and reason in result, result


# Tickets show no Secret data ------------------------------------------------------------------

SECRET_VALUE = "c3VwZXItc2VjcmV0LXZhbHVl"  # base64 of a value that must never be shown


@pytest.mark.parametrize(
    ("command", "preview"),
    [
        ("kubectl apply -f s.yaml", f"apiVersion: v1\nkind: Secret\ndata:\n  k: {SECRET_VALUE}\n"),
        ("kubectl apply -f s.yaml", {"kind": "Secret", "stringData": {"k": SECRET_VALUE}}),
        (
            "kubectl apply -f s.yaml",
            {"kind": "List", "items": [{"kind": "Secret", "data": {"k": SECRET_VALUE}}]},
        ),
        ("API PATCH /api/v1/namespaces/a/secrets/db", f'{{"data": {{"k": "{SECRET_VALUE}"}}}}'),
        (
            "API PATCH /api/v1/namespaces/a/secrets/db",
            f'[{{"op": "add", "path": "/data/k", "value": "{SECRET_VALUE}"}}]',
        ),
        ("API PUT /api/v1/namespaces/a/secrets/db", {"data": {"k": SECRET_VALUE}}),
        (
            "kubectl apply -f cm.yaml",
            {
                "kind": "ConfigMap",
                "metadata": {
                    "annotations": {
                        "kubectl.kubernetes.io/last-applied-configuration": SECRET_VALUE
                    }
                },
            },
        ),
        ("kubectl label secret db a=b", f"--- current\n+++ after\n-  k: {SECRET_VALUE}\n"),
        ("kubectl label secret db a=b", f"server dry run:\n{{{SECRET_VALUE}"),
    ],
)
def test_ticket_previews_never_hold_secret_data(command: str, preview: object) -> None:
    shown = redact_preview(command, preview)  # type: ignore[arg-type]
    assert SECRET_VALUE not in str(shown)


def test_ticket_previews_of_other_objects_are_kept() -> None:
    diff = "--- current\n+++ after\n-  replicas: 2\n+  replicas: 0\n"
    assert redact_preview("kubectl scale deploy web --replicas=0", diff) == diff
    doc = {"kind": "ConfigMap", "data": {"k": "v"}}
    assert redact_preview("kubectl apply -f cm.yaml", doc) == doc


def test_tickets_stored_unmasked_are_masked_when_read(tmp_path: Path) -> None:
    """A ticket written before previews were masked (straight into the table) shows no data."""
    db = Database.open(f"sqlite:///{tmp_path / 'casemate.db'}")
    try:
        service = ReviewService(db, AuditLog(db))
        now = datetime.now(UTC)
        with db.session() as s:
            row = ReviewTicket(
                state="pending",
                username="alice",
                command_hash="a" * 64,
                command_display="kubectl apply -f s.yaml",
                cluster="c",
                account="a",
                namespace="n",
                rule_id="r",
                reason="",
                preview_format="text",
                preview=f"kind: Secret\ndata:\n  k: {SECRET_VALUE}\n",
                preview_sha256="",
                created_at=now,
                expires_at=now + timedelta(hours=1),
                decided_by="",
                decision_note="",
                self_approved=False,
            )
            s.add(row)
            s.flush()
            ticket_id = row.id
        shown = service.get(ticket_id).preview_text()
        assert SECRET_VALUE not in shown and "<redacted>" in shown
    finally:
        db.dispose()
