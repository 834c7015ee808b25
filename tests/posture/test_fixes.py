from __future__ import annotations

from casemate.posture.engine import Scanner
from casemate.posture.fixes import FIXES, default_deny_policies, fix_text
from casemate.posture.manifests import parse_documents
from casemate.posture.model import Subject

SHOP = """# the shop's web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # keep me
  namespace: shop
  annotations:
    container.apparmor.security.beta.kubernetes.io/web: unconfined
spec:
  template:
    metadata:
      labels: {app: web}
      annotations:
        container.apparmor.security.beta.kubernetes.io/web: unconfined
    spec:
      hostPID: yes
      containers:
      - name: web
        image: "nginx:1.25"
        securityContext:
          privileged: true  # why?
          procMount: Unmasked
          capabilities:
            add: [NET_ADMIN]
            drop: [NET_RAW]
      - name: side
        image: busybox:1
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: p, namespace: shop}
  spec:
    containers: [{name: a, image: "x:1"}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: shop}
"""


def findings(text: str) -> set[tuple[str, str, str]]:
    scanner = Scanner()
    out = set()
    for item in parse_documents(text.encode(), "x.yaml"):
        assert isinstance(item, Subject), item
        out |= {(f.rule_id, f.name, f.path) for f in scanner.check(item)}
    return out


def test_fixes_clear_their_findings_and_add_none():
    before = findings(SHOP)
    result = fix_text(SHOP, "x.yaml")
    after = findings(result.text)
    assert after - before == set()
    assert [f for f in after if f[0] in FIXES] == [
        ("escape.capabilities-restricted", "web",
         "spec.template.spec.containers[0].securityContext.capabilities.add[0]"),
    ]  # fmt: skip
    fixed = before - after
    assert (
        "escape.privileged",
        "web",
        "spec.template.spec.containers[0].securityContext.privileged",
    ) in fixed
    assert {p.rule_id for p in result.applied} >= {
        "escape.privileged", "escape.host-namespaces", "escape.run-as-non-root",
        "escape.seccomp-required", "escape.apparmor", "escape.proc-mount", "rbac.automount-token",
        "rbac.serviceaccount-automount",
    }  # fmt: skip


def test_fixes_keep_comments_order_and_untouched_lines():
    text = fix_text(SHOP, "x.yaml").text
    assert text.startswith("# the shop's web tier\napiVersion: apps/v1\nkind: Deployment\n")
    assert "  name: web   # keep me\n" in text
    assert 'image: "nginx:1.25"' in text
    assert "privileged: false" in text and "# why?" in text
    assert "drop: [NET_RAW, ALL]" in text
    assert "add: [NET_ADMIN]" in text  # which capabilities are needed is the user's call
    assert "container.apparmor.security.beta.kubernetes.io/web: runtime/default" in text
    assert "labels: {app: web}" in text
    # the metadata annotation of the Deployment itself is not a pod's: left alone
    assert text.count("unconfined") == 1


def test_nothing_to_fix_leaves_the_text_identical():
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}  # x\ndata: {a: b}\n"
    result = fix_text(text, "c.yaml")
    assert result.text == text and result.applied == ()


def test_a_file_with_a_broken_document_is_reported_and_left_alone():
    text = "kind: Pod\nmetadata: {name: x\n---\n" + SHOP
    result = fix_text(text, "x.yaml")
    messages = [p.message for p in result.problems]
    assert "invalid YAML" in messages[0] and "cannot rewrite the file" in messages[1]
    assert result.text == text and result.applied == ()


def _ns_findings(objs):
    scanner = Scanner()
    for o in objs:
        scanner.check(Subject(o))
    return {(f.rule_id, f.name) for f in scanner.finish()} | {
        (f.rule_id, f.name) for o in objs for f in Scanner().check(Subject(o))
        if f.rule_id.startswith("network.")
    }  # fmt: skip


def test_default_deny_policies_clear_the_network_findings():
    workload = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "a:1"}]}}},
    }  # fmt: skip
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }  # fmt: skip
    before = _ns_findings([workload, service])
    assert ("network.namespace-no-policy", "shop") in before
    policies = default_deny_policies("shop", [Subject(service)])
    assert [p["metadata"]["name"] for p in policies] == [
        "default-deny", "allow-dns", "allow-to-web", "allow-from-web",
    ]  # fmt: skip
    assert policies[2]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8080}]
    after = _ns_findings([workload, service, *policies])
    assert {f for f in after if f[0].startswith("network.")} == set()


def test_cli_fix_then_rescan(cli, tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text(SHOP)
    r = cli("posture", "fix", str(path), "--dry-run")
    assert r.returncode == 0 and "-          privileged: true  # why?" in r.stdout
    assert path.read_text() == SHOP and not (tmp_path / "casemate-netpol-shop.yaml").exists()
    assert cli("posture", "scan", str(path), "--rule", "escape.privileged").returncode == 1
    r = cli("posture", "fix", str(path))
    assert r.returncode == 0, r.stderr
    assert "casemate-netpol-shop.yaml: default deny" in r.stdout
    assert (tmp_path / "casemate-netpol-shop.yaml").exists()
    r = cli("posture", "scan", str(tmp_path), "--rule", "escape.privileged", "--rule", "network.*",
            "--fail-on", "low")  # fmt: skip
    assert r.returncode == 0, r.stdout
    r = cli("posture", "fix", str(path))
    assert "nothing to fix" in r.stdout and "exists" in r.stderr and r.returncode == 2


def test_strategic_patch_addresses_containers_by_name():
    from casemate.posture.fixes import kubectl_patch, live_patches, strategic_patch

    obj = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": {"spec": {"hostPID": True, "automountServiceAccountToken": False,
            "containers": [
                {"name": "web", "image": "a@sha256:" + "a" * 64, "securityContext": {
                    "privileged": True, "capabilities": {"drop": ["NET_RAW"]},
                    "allowPrivilegeEscalation": False, "runAsNonRoot": True,
                    "readOnlyRootFilesystem": True}},
                {"name": "side", "image": "b@sha256:" + "b" * 64, "securityContext": {
                    "allowPrivilegeEscalation": False, "runAsNonRoot": True,
                    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}},
            ],
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}}},
    }  # fmt: skip
    patch = strategic_patch(obj, live_patches(Subject(obj)))
    assert patch == {
        "spec": {"template": {"spec": {
            "containers": [{"name": "web", "securityContext": {
                "privileged": False, "capabilities": {"drop": ["NET_RAW", "ALL"]}}}],
            "hostPID": False,
        }}}
    }  # fmt: skip
    command = kubectl_patch(obj, live_patches(Subject(obj)))
    assert command.startswith("kubectl patch deployment.apps web -n shop --type=strategic -p '")


def test_cli_fix_refuses_namespace_names_that_are_paths(cli, tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ../../escape}\n"
        "spec:\n  automountServiceAccountToken: false\n"
        "  containers: [{name: c, image: 'a@sha256:" + "a" * 64 + "'}]\n"
    )
    r = cli("posture", "fix", str(path))
    assert r.returncode == 2 and "is not a namespace name" in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["evil.yaml"]
    assert not list(tmp_path.parent.glob("escape*"))


def test_windows_host_process_is_switched_off_where_it_is_set():
    text = """apiVersion: v1
kind: Pod
metadata: {name: w, namespace: shop}
spec:
  securityContext:
    windowsOptions: {hostProcess: true}  # pod level
  containers:
  - name: c
    image: x:1
    securityContext:
      windowsOptions: {hostProcess: true}
"""
    assert {f[0] for f in findings(text)} >= {"escape.windows-host-process"}
    result = fix_text(text, "x.yaml")
    assert "escape.windows-host-process" not in {f[0] for f in findings(result.text)}
    assert findings(result.text) - findings(text) == set()
    assert "windowsOptions: {hostProcess: false}" in result.text and "# pod level" in result.text
