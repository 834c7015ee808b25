"""Invariants of the kubectl/helm tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from casemate.bastion.commands import HELM, KUBECTL, TOOLS, FlagSpec, ToolSpec, VerbSpec


def walk(spec: VerbSpec, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], VerbSpec]]:
    for sub in spec.subverbs.values():
        yield (*path, sub.name), sub
        yield from walk(sub, (*path, sub.name))


ALL = [(tool, path, spec) for tool in TOOLS.values() for path, spec in walk(tool.root)]


@pytest.mark.parametrize(
    ("tool", "path", "spec"), ALL, ids=[f"{t.name}:{' '.join(p)}" for t, p, _ in ALL]
)
def test_each_command_table(tool: ToolSpec, path: tuple[str, ...], spec: VerbSpec):
    # short flags are unique among a command's own flags
    shorts = [f.short for f in spec.flags.values() if f.short]
    assert len(shorts) == len(set(shorts))
    # each flag is stored under its own name, with a valid kind
    for name, flag in spec.flags.items():
        assert name == flag.name
        assert flag.kind in ("bool", "value", "optional")
        assert (flag.kind == "value") == (flag.noopt == "")
        assert flag.name == flag.name.lower() and " " not in flag.name
    # aliases do not collide with siblings
    names: list[str] = []
    for sub in spec.subverbs.values():
        names += [sub.name, *sub.aliases]
    assert len(names) == len(set(names))
    # positional modes that need a kind have one
    if spec.positional in ("names", "name", "target", "targets"):
        assert spec.kind is not None or spec.name == "run"
    # required sub-commands exist
    if spec.subverb_required:
        assert spec.subverbs


def test_refused_global_flags():
    refused = {name for name, flag in KUBECTL.global_flags.items() if flag.refuse}
    assert {
        "kubeconfig",
        "token",
        "server",
        "as",
        "as-group",
        "as-uid",
        "user",
        "context",
        "cluster",
        "certificate-authority",
        "client-certificate",
        "client-key",
        "insecure-skip-tls-verify",
        "username",
        "password",
        "tls-server-name",
    } <= refused
    helm_refused = {name for name, flag in HELM.global_flags.items() if flag.refuse}
    assert {
        "kube-context",
        "kube-token",
        "kube-apiserver",
        "kube-as-user",
        "kube-as-group",
        "kube-ca-file",
        "kube-insecure-skip-tls-verify",
        "kube-tls-server-name",
        "kubeconfig",
    } <= helm_refused


def test_flag_spec_notation():
    from casemate.bastion.commands import flags, refused

    assert flags("A/all-namespaces") == (FlagSpec("all-namespaces", "A", "bool", "true"),)
    assert flags("o/output=") == (FlagSpec("output", "o", "value"),)
    assert flags("f/filename=,") == (FlagSpec("filename", "f", "value", listy=True),)
    assert flags("dry-run?unchanged") == (FlagSpec("dry-run", None, "optional", "unchanged"),)
    assert refused("why", "token=")[0].refuse == "why"
    assert FlagSpec("x", kind="value").takes_value
