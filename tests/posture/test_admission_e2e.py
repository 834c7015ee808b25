"""The admission webhook end to end: ``casemate admission serve`` as a real process, registered
with a ValidatingWebhookConfiguration on the real test API server, driven with real kubectl."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from casemate.testenv.kube import LocalCluster

pytestmark = pytest.mark.k8s


def _tls(tmp: Path) -> tuple[Path, Path, bytes]:
    """A CA and a serving certificate for 127.0.0.1 signed by it (the CA also in ca.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posture-test-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posture-webhook")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert, key_path = tmp / "tls.crt", tmp / "tls.key"
    cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (tmp / "ca.pem").write_bytes(ca_pem)
    return cert, key_path, ca_pem


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_webhook(
    tmp_path: Path, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, ssl.SSLContext, Path]]:
    """``casemate admission serve`` with a fresh certificate on a free loopback port, once its
    /healthz answers: (process, base URL, client TLS context, its log). Stopped afterwards."""
    cert, key, ca_pem = _tls(tmp_path)
    port = _free_port()
    log = tmp_path / "webhook.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "casemate.cli", "admission", "serve", "--cert", str(cert),
             "--key", str(key), "--listen", f"127.0.0.1:{port}", *args],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", verify=ctx, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the webhook did not start: {log.read_text()}")
            time.sleep(0.3)
        yield proc, url, ctx, log
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def webhook(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    args = ("--enforce", "escape.privileged", "--enforce", "escape.host-*",
            "--warn", "images.latest-tag")  # fmt: skip
    with serve_webhook(tmp_path, *args) as (_, url, _, _):
        yield url, (tmp_path / "ca.pem").read_bytes()


def _pod(name: str, *, privileged: bool = False, image: str = "busybox:1.36") -> dict:
    ctx = {"privileged": True} if privileged else {"allowPrivilegeEscalation": False}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": image, "securityContext": ctx}]},
    }


def _apply(
    cluster: LocalCluster, ns: str, obj: dict, *extra: str
) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "create", "-n", ns, "-f", "-", *extra, input=json.dumps(obj), check=False
    )


@contextlib.contextmanager
def register(
    kube_cluster: LocalCluster,
    kube_namespace: str,
    url: str,
    ca_pem: bytes,
    failure_policy: str = "Fail",
) -> Iterator[str]:
    """A ValidatingWebhookConfiguration for ``url`` on ``kube_namespace``, once the API server
    calls the webhook (its name is yielded); deleted afterwards."""
    name = f"casemate-posture-{kube_namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "posture.casemate.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": failure_policy,
                "timeoutSeconds": 5,
                "clientConfig": {
                    "url": f"{url}/validate",
                    "caBundle": base64.b64encode(ca_pem).decode(),
                },
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": kube_namespace}
                },
                "rules": [
                    {
                        "operations": ["CREATE", "UPDATE"],
                        "apiGroups": ["", "apps", "batch"],
                        "apiVersions": ["v1"],
                        "resources": [
                            "pods",
                            "deployments",
                            "statefulsets",
                            "daemonsets",
                            "replicasets",
                            "jobs",
                            "cronjobs",
                        ],
                    }  # fmt: skip
                ],
            }
        ],
    }
    kube_cluster.kubectl("create", "-f", "-", input=json.dumps(config))
    try:
        # the API server picks the configuration up asynchronously: wait until it calls us
        deadline = time.monotonic() + 30
        while True:
            r = _apply(
                kube_cluster, kube_namespace, _pod("probe", privileged=True), "--dry-run=server"
            )
            if r.returncode != 0 and "casemate posture" in r.stderr:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"the webhook was never called: {r.stdout} {r.stderr}")
            time.sleep(0.5)
        yield name
    finally:
        kube_cluster.kubectl("delete", "validatingwebhookconfiguration", name, check=False)


@pytest.fixture
def registered(
    kube_cluster: LocalCluster, kube_namespace: str, webhook: tuple[str, bytes]
) -> Iterator[str]:
    url, ca_pem = webhook
    with register(kube_cluster, kube_namespace, url, ca_pem):
        yield kube_namespace


def test_privileged_pod_refused_with_the_rules_message(kube_cluster: LocalCluster, registered: str):
    r = _apply(kube_cluster, registered, _pod("rooted", privileged=True))
    assert r.returncode != 0
    assert "denied the request" in r.stderr
    assert "escape.privileged: container c is privileged" in r.stderr
    assert "spec.containers[0].securityContext.privileged" in r.stderr
    got = kube_cluster.kubectl("get", "pod", "rooted", "-n", registered, check=False)
    assert got.returncode != 0 and "NotFound" in got.stderr


def test_compliant_pod_admitted(kube_cluster: LocalCluster, registered: str):
    r = _apply(kube_cluster, registered, _pod("fine"))
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr
    kube_cluster.kubectl("get", "pod", "fine", "-n", registered)


def test_warning_printed_by_kubectl(kube_cluster: LocalCluster, registered: str):
    r = _apply(kube_cluster, registered, _pod("floating", image="busybox"))
    assert r.returncode == 0, r.stderr
    assert "Warning: casemate posture: images.latest-tag" in r.stderr


def test_deployment_with_violating_template_refused_at_the_deployment(
    kube_cluster: LocalCluster, registered: str
):
    labels = {"app": "web"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {**_pod("x")["spec"], "hostPID": True},
            },
        },
    }
    r = _apply(kube_cluster, registered, deployment)
    assert r.returncode != 0
    assert "refused this Deployment" in r.stderr
    assert "escape.host-namespaces" in r.stderr and "spec.template.spec.hostPID" in r.stderr
    got = kube_cluster.kubectl("get", "deployment", "web", "-n", registered, check=False)
    assert got.returncode != 0


def test_failure_policy_fail_refuses_and_ignore_admits_while_the_webhook_is_down(
    kube_cluster: LocalCluster, kube_namespace: str, tmp_path: Path
):
    """The webhook process stopped: with failurePolicy Fail even a compliant pod is refused by
    the API server (fail closed); switched to Ignore, a privileged pod is admitted unchecked."""
    ns = kube_namespace
    with (
        serve_webhook(tmp_path, "--enforce", "escape.privileged") as (proc, url, _, _),
        register(kube_cluster, ns, url, (tmp_path / "ca.pem").read_bytes(), "Fail") as name,
    ):
        proc.terminate()
        proc.wait(10)
        r = _apply(kube_cluster, ns, _pod("closed"))
        assert r.returncode != 0, r.stdout
        assert 'failed calling webhook "posture.casemate.io"' in r.stderr, r.stderr
        got = kube_cluster.kubectl("get", "pod", "closed", "-n", ns, check=False)
        assert got.returncode != 0 and "NotFound" in got.stderr
        patch = [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]
        kube_cluster.kubectl(
            "patch", "validatingwebhookconfiguration", name, "--type=json", "-p",
            json.dumps(patch),
        )  # fmt: skip
        # the API server picks the change up asynchronously: the same kind of request, retried
        deadline = time.monotonic() + 30
        while (r := _apply(kube_cluster, ns, _pod("open", privileged=True))).returncode != 0:
            assert 'failed calling webhook "posture.casemate.io"' in r.stderr, r.stderr
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.5)
        assert "casemate posture" not in r.stderr  # nothing checked it
        kube_cluster.kubectl("get", "pod", "open", "-n", ns)
