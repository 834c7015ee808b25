"""Before a command is decided (bastion/inspection.py): manifests → kinds, real-path checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casemate.bastion.inspection import (
    RunRefused,
    check_real_paths,
    check_redirect,
    interactive,
    manifest_refs,
)
from casemate.bastion.kubectl import ResourceRef, parse_command
from casemate.bastion.shell import Redirect, parse_line


def test_manifest_refs_kinds_lists_and_custom_kinds() -> None:
    text = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: root}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: x}}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
"""
    assert manifest_refs(text) == [
        ResourceRef("clusterrolebindings", "root"),
        ResourceRef("configmaps", "a", "x"),
        ResourceRef("widget.example.com", "w"),
    ]


@pytest.mark.parametrize(
    "text",
    ["- a\n- b\n", "kind: Pod\n", "apiVersion: v1\nkind: 'Bad Kind'\n", "just text"],
)
def test_manifest_refs_refuses_non_objects(text: str) -> None:
    with pytest.raises(ValueError):
        manifest_refs(text)


def test_symlinks_out_of_the_workspace_are_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "ok.yaml").write_text("{}")
    os.symlink("/etc/passwd", ws / "evil.yaml")
    cmd = parse_command(["kubectl", "apply", "-f", "ok.yaml"], workspace=str(ws))
    assert check_real_paths(cmd, ws) == {"ok.yaml": ws / "ok.yaml"}
    cmd = parse_command(["kubectl", "apply", "-f", "evil.yaml"], workspace=str(ws))
    with pytest.raises(RunRefused):
        check_real_paths(cmd, ws)


def test_redirect_targets_inside_the_workspace_only(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "sub").mkdir(parents=True)
    os.mkdir(tmp_path / "outside")
    os.symlink(tmp_path / "outside", ws / "away")
    os.symlink("/etc/passwd", ws / "passwd")
    os.symlink("new.txt", ws / "dangling")
    assert check_redirect(Redirect("out.txt"), ws) == ws / "out.txt"
    assert check_redirect(Redirect("sub/out.txt", append=True), ws) == ws / "sub" / "out.txt"
    assert check_redirect(Redirect(str(ws / "abs.txt")), ws) == ws / "abs.txt"
    refused = {
        "../x": "outside the session workspace",
        "/etc/x": "outside the session workspace",
        "away/x": "leads outside the session workspace",
        "passwd": "symbolic link",
        "dangling": "symbolic link",
        "sub": "not a regular file",
        "sub/": "is a directory",
        ".": "is a directory",
        "nodir/x": "no such directory",
        "-": "standard input",
        "https://x/y": "URLs",
    }
    for typed, reason in refused.items():
        with pytest.raises(RunRefused) as info:
            check_redirect(Redirect(typed), ws)
        assert reason in info.value.reason, (typed, info.value.reason)
    assert not (tmp_path / "outside" / "x").exists()


@pytest.mark.parametrize(
    "line",
    [
        "kubectl cp other/web:/etc/hostname out.txt",
        "kubectl cp in.txt other/web:/tmp/in.txt",
        "kubectl cp -n other web:/etc/hostname out.txt",
        "kubectl cp team/web:/etc/hostname other/web:/tmp/x",
        "kubectl exec -it -n other web -- sh",
    ],
)
def test_pods_outside_the_grant_are_refused_before_review(line: str) -> None:
    parsed = parse_line(line)
    command = parse_command(parsed.first.argv)
    with pytest.raises(RunRefused, match="namespace 'other' is outside your grant"):
        interactive(command, parsed, None, "team", ["team"])


@pytest.mark.parametrize(
    "line",
    [
        "kubectl cp web:/etc/hostname out.txt",
        "kubectl cp team/web:/etc/hostname out.txt",
        "kubectl cp -n team in.txt web:/tmp/in.txt",
        "kubectl get pods -n other",  # not a pod's terminal or files: the policy decides
    ],
)
def test_pods_inside_the_grant_pass_the_early_check(line: str) -> None:
    parsed = parse_line(line)
    command = parse_command(parsed.first.argv)
    assert interactive(command, parsed, None, "team", ["team"]) is False
    assert interactive(command, parsed, None, "team", ["*"]) is False
