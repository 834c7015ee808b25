"""The second manifest: comments, order and quoting kept; only the remediation is added."""

from __future__ import annotations

import pytest
import yaml

from casemate.errors import InvalidInput
from casemate.vuln.remediate.manifest import VOLUME, Change, diff, load, remediate, sites
from casemate.vuln.remediate.plan import ContainerPlan, PackageFix

MANIFEST = """\
# the web tier
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # keep this comment
  labels: {app: web}
spec:
  replicas: 2
  template:
    metadata:
      labels:
        app: web
    spec:
      securityContext:
        runAsUser: 0
      initContainers:
        - name: migrate
          image: "casemate-test/debian12:1"
      containers:
        - name: app
          image: 'casemate-test/debian12:1'
          args: ["sleep", "infinity"]
        - name: sidecar
          image: casemate-test/busybox:1
          securityContext:
            readOnlyRootFilesystem: true
            runAsUser: 1000
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          securityContext: {runAsNonRoot: true}
          containers:
          - name: job
            image: casemate-test/debian12:1
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
"""

PLAN = ContainerPlan(
    "app", "casemate-test/debian12:1", "dpkg",
    (PackageFix("zlib1g", "zlib", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1", ("CVE-2",)),),
)  # fmt: skip


def test_sites_cover_every_container_with_security_facts() -> None:
    found = list(sites(load(MANIFEST, "m.yaml")))
    assert [(s.workload, s.init, s.facts.name) for s in found] == [
        ("Deployment/web", True, "migrate"),
        ("Deployment/web", False, "app"),
        ("Deployment/web", False, "sidecar"),
        ("CronJob/nightly", False, "job"),
    ]
    app, sidecar, job = (s.facts for s in found[1:])
    assert (app.run_as_user, app.read_only_root) == (0, False)
    assert (sidecar.run_as_user, sidecar.read_only_root) == (1000, True)
    assert job.run_as_non_root


def test_remediate_adds_only_the_fix_and_keeps_the_rest() -> None:
    change = Change(PLAN, "echo fetch", "echo install")
    after = remediate(MANIFEST, "m.yaml", {(0, "app"): change})
    assert "# the web tier" in after and "name: web   # keep this comment" in after
    assert "image: 'casemate-test/debian12:1'" in after  # quoting kept
    assert 'image: "casemate-test/debian12:1"' in after
    removed = [line for line in diff(MANIFEST, after, "m.yaml").splitlines()
               if line.startswith("-") and not line.startswith("---")]  # fmt: skip
    assert removed == []  # nothing of the original is changed, only lines added
    before_docs = list(yaml.safe_load_all(MANIFEST))
    docs = list(yaml.safe_load_all(after))
    assert docs[1:] == before_docs[1:]
    spec = docs[0]["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": VOLUME, "emptyDir": {}}]
    assert [c["name"] for c in spec["initContainers"]] == ["migrate", "casemate-fetch-app"]
    fetch = spec["initContainers"][1]
    assert fetch["image"] == "casemate-test/debian12:1"
    assert fetch["command"] == ["sh", "-c", "echo fetch"]
    assert fetch["securityContext"] == {"runAsUser": 0}
    app = spec["containers"][0]
    assert app["lifecycle"] == {"postStart": {"exec": {"command": ["sh", "-c", "echo install"]}}}
    assert app["volumeMounts"] == [{"name": VOLUME, "mountPath": "/casemate-fixes"}]
    assert "lifecycle" not in spec["containers"][1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Pod\nmetadata:\n  name: {{ .Values.name }}\n", "line 3: templating left in"),
        ("kind: Pod\n  bad: [\n", "is not valid YAML"),
    ],
)
def test_bad_manifests_are_named(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"^m.yaml.*{message}"):
        load(text, "m.yaml")
