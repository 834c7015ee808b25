"""Helm charts and Kustomize directories rendered with the real tools (the test environment's
helm and kubectl builds), then checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from casemate.posture.engine import Scanner, select_rules
from casemate.posture.manifests import LoadProblem, load_paths
from casemate.posture.model import Subject
from casemate.posture.rendered import Renderers, render
from casemate.testenv.kube import find_binaries

pytestmark = pytest.mark.k8s

CHART = {
    "Chart.yaml": "apiVersion: v2\nname: shop\nversion: 0.1.0\n",
    "values.yaml": "privileged: true\n",
    "templates/deploy.yaml": """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  namespace: {{ .Release.Namespace }}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        securityContext:
          privileged: {{ .Values.privileged }}
""",
}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def renderers() -> Renderers:
    binaries = find_binaries()
    return Renderers(helm=str(binaries.helm), kubectl=str(binaries.kubectl), namespace="shop")


def scan(paths, renderers, values=()):
    r = Renderers(renderers.helm, renderers.kubectl, "rel", "shop", tuple(values))
    scanner = Scanner(select_rules(["escape.privileged", "escape.host-namespaces"]))
    findings, problems = [], []
    for item in load_paths([str(p) for p in paths], render=lambda i: render(i, r)):
        if isinstance(item, Subject):
            findings += scanner.check(item)
        else:
            problems.append(item)
    return findings, problems


def test_chart_rendered_with_release_and_values(tmp_path, renderers):
    chart = write(tmp_path / "charts" / "shop", CHART)
    findings, problems = scan([tmp_path], renderers)
    assert problems == []
    (finding,) = findings
    assert (finding.kind, finding.namespace, finding.name) == ("Deployment", "shop", "rel-web")
    assert finding.file == f"{chart} (helm template)" and finding.line and finding.line > 1
    values = tmp_path / "safe.yaml"
    values.write_text("privileged: false\n")
    assert scan([chart], renderers, [str(values)]) == ([], [])


def test_broken_chart_is_named_and_the_rest_scanned(tmp_path, renderers):
    write(tmp_path / "bad", {**CHART, "templates/deploy.yaml": "{{ .Values.nope.deeper }}\n"})
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostPID: true\n"
        "  containers: [{name: c, image: 'a:1'}]\n"
    )
    findings, problems = scan([tmp_path], renderers)
    assert [f.name for f in findings] == ["p"]
    (problem,) = problems
    assert problem.file.endswith("bad (helm template)")
    assert "failed to render" in problem.message and "nope" in problem.message


def test_kustomization(tmp_path, renderers):
    write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": "resources: [pod.yaml]\nnamespace: kns\nnamePrefix: x-\n",
            "pod.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
            "  hostNetwork: true\n  containers: [{name: c, image: 'a:1'}]\n",
        },
    )
    findings, problems = scan([tmp_path], renderers)
    assert problems == []
    assert [(f.rule_id, f.namespace, f.name) for f in findings] == [
        ("escape.host-namespaces", "kns", "x-p")
    ]


def test_missing_tool_is_a_problem(tmp_path):
    write(tmp_path / "shop", CHART)
    items = list(
        load_paths([str(tmp_path)], render=lambda i: render(i, Renderers(helm="/nonexistent")))
    )
    assert items == [
        LoadProblem(f"{tmp_path / 'shop'} (helm template)", "not rendered: helm was not found")
    ]
    # without a renderer a chart is named as not checked, never read as plain files
    (problem,) = load_paths([str(tmp_path)])
    assert isinstance(problem, LoadProblem) and "a helm folder; not rendered" in problem.message
