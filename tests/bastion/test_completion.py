"""Tab completion of kubectl / helm lines (bastion/completion.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from casemate.bastion.commands import HELM, KUBECTL, TOOLS, ToolSpec, VerbSpec
from casemate.bastion.completion import kube_completer
from casemate.bastion.filters import FILTERS
from casemate.bastion.kinds import BUILTIN_KINDS

# kube_completer -------------------------------------------------------------------------------


def test_first_word_is_kubectl_or_helm() -> None:
    assert kube_completer("") == ["helm", "kubectl"]
    assert kube_completer("k") == ["kubectl"]
    assert kube_completer("  h") == ["helm"]
    assert kube_completer("grep") == []


def test_after_a_pipe_filters_are_offered() -> None:
    assert kube_completer("kubectl get pods | ") == sorted(FILTERS)
    assert kube_completer("kubectl get pods|g") == ["grep"]
    assert kube_completer("kubectl get pods -o json | jq . | s") == ["sort"]
    assert kube_completer("kubectl get pods | grep ") == []


def test_verbs_and_sub_verbs() -> None:
    assert kube_completer("kubectl ge") == ["get"]
    assert "describe" in kube_completer("kubectl ")
    assert kube_completer("kubectl rollout re") == ["restart", "resume"]
    assert kube_completer("kubectl create secret ") == ["docker-registry", "generic", "tls"]
    assert kube_completer("helm get ") == [
        "all",
        "hooks",
        "manifest",
        "metadata",
        "notes",
        "values",
    ]
    assert kube_completer("helm up") == ["upgrade"]
    assert kube_completer("kubectl -n kube-system ge") == ["get"]
    assert kube_completer("kubectl --namespace=x ge") == ["get"]
    assert kube_completer("kubectl create cm ") == []  # a new object's name


def test_refused_verbs_are_not_offered() -> None:
    kubectl = kube_completer("kubectl ")
    for name in ("edit", "proxy", "plugin", "alpha"):
        assert name not in kubectl
    helm = kube_completer("helm ")
    for name in ("repo", "search", "pull", "push", "registry", "plugin", "env"):
        assert name not in helm
    assert kube_completer("kubectl edit ") == []
    assert kube_completer("kubectl edit --") == []


def test_long_flags_of_the_current_verb_and_global_flags() -> None:
    assert kube_completer("kubectl logs --t") == ["--tail", "--timestamps"]
    assert kube_completer("kubectl get pods --all-n") == ["--all-namespaces"]
    assert "--namespace" in kube_completer("kubectl get pods --")
    assert "--tail" not in kube_completer("kubectl get --")
    assert kube_completer("helm list --all-") == ["--all-namespaces"]
    assert kube_completer("kubectl get --output=") == []


REFUSED_EXAMPLES = (
    "--kubeconfig",
    "--token",
    "--as",
    "--as-group",
    "--server",
    "--context",
    "--cluster",
    "--insecure-skip-tls-verify",
    "--kube-context",
    "--kube-token",
    "--post-renderer",
)


def verb_paths(tool: ToolSpec) -> Iterator[tuple[str, ...]]:
    def walk(spec: VerbSpec, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        yield path
        for sub in spec.subverbs.values():
            yield from walk(sub, (*path, sub.name))

    yield from walk(tool.root, (tool.name,))


ALL_PATHS = [path for tool in (KUBECTL, HELM) for path in verb_paths(tool)]


@pytest.mark.parametrize("path", ALL_PATHS, ids=" ".join)
def test_refused_flags_are_never_offered(path: tuple[str, ...]) -> None:
    # the flags cobra sees at this level: the tool's global flags, shadowed by local ones of
    # the same name (`create rolebinding --user` names a subject, it is not kubectl's --user)
    tool = TOOLS[path[0]]
    level = tool.root
    for word in path[1:]:
        sub = level.find_subverb(word)
        assert sub is not None
        level = sub
    table = {**tool.global_flags, **level.flags}
    refused = {f"--{name}" for name, spec in table.items() if spec.refuse}
    line = " ".join(path)
    for prefix in ("-", "--", "--a", "--k", "--t", "--s", "--c", "--u", "--i", "--p"):
        offered = kube_completer(f"{line} {prefix}")
        assert not refused & set(offered), (line, prefix)
        assert not set(REFUSED_EXAMPLES) & set(offered), (line, prefix)
        assert all(word.startswith(prefix) for word in offered)


def test_refused_flags_examples() -> None:
    assert kube_completer("kubectl --k") == []
    assert kube_completer("kubectl get pods --to") == []
    assert kube_completer("kubectl get pods --as") == []
    assert "--server" not in kube_completer("kubectl --")
    assert "--kubeconfig" not in kube_completer("helm --")
    assert kube_completer("kubectl logs pod --insecure") == []


def test_resource_kinds() -> None:
    kinds = kube_completer("kubectl get ")
    assert {info.plural for info in BUILTIN_KINDS} <= set(kinds)
    assert {"po", "deploy", "svc", "ns", "all"} <= set(kinds)
    assert kube_completer("kubectl get deploym") == ["deployments"]
    assert kube_completer("kubectl describe -A po") == sorted(
        ["po", "pods", "poddisruptionbudgets", "podtemplates"]
    )
    assert kube_completer("kubectl delete -n app sec") == ["secrets"]
    assert kube_completer("kubectl get pods,dep") == ["pods,deploy", "pods,deployments"]
    assert kube_completer("kubectl get pod/x sv") == ["svc"]  # TYPE/NAME TYPE/NAME
    assert kube_completer("kubectl get pods x") == []  # object names need the cluster
    assert kube_completer("kubectl get pods/") == []
    assert kube_completer("kubectl rollout restart dep") == ["deploy", "deployments"]
    assert kube_completer("kubectl logs po") == []  # a pod name, not a kind


def test_flag_values_and_after_double_dash_are_not_completed() -> None:
    assert kube_completer("kubectl get -n ") == []
    assert kube_completer("kubectl get -o ") == []
    assert kube_completer("kubectl get -Ao ") == []
    assert kube_completer("kubectl get -n app ") == kube_completer("kubectl get ")
    assert kube_completer("kubectl get -A ") == kube_completer("kubectl get ")
    assert kube_completer("kubectl exec pod -- ") == []
    assert kube_completer("kubectl exec pod -- --") == []


def test_quoting() -> None:
    assert kube_completer("kubectl get 'po") == []
    assert kube_completer('kubectl get "po') == []
    assert kube_completer("kubectl get po\\") == []
    assert kube_completer("kubectl get 'po'") == []  # quoted current word
    assert kube_completer("kubectl 'get' dep") == ["deploy", "deployments"]
    assert kube_completer('kubectl "get" -l "a b" dep') == ["deploy", "deployments"]
    assert kube_completer("kubectl get pods -l 'a|b' | g") == ["grep"]
    assert kube_completer("kubectl get pods -l 'a|b' g") == []


def test_unknown_program_has_no_candidates() -> None:
    assert kube_completer("bash ") == []
