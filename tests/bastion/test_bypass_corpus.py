"""Evasion attempts against the restricted shell, the parser and the shipped rule pack.

Hand-written cases live in ``bypass_corpus.yaml``; generated variations of high-risk commands
(flag order, flag syntax, kind aliases, quoting) are checked with hypothesis.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.bastion.kubectl import CommandRefused, ResourceRef, parse_command
from casemate.bastion.policy import (
    REFUSED,
    Context,
    Policy,
    Rule,
    decide,
    default_policy,
    load_rulepack,
)
from casemate.bastion.policy import (
    CommandAction as Action,
)
from casemate.bastion.shell import ShellRefused, parse_line

CORPUS: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "bypass_corpus.yaml").read_text(encoding="utf-8")
)
POLICY = default_policy()
# The rule pack on top of a site policy that accepts everything (and defaults to accept): the
# pack alone must stop every entry.
_PACK_ON_ACCEPT_ALL = Policy(rules=(Rule("site.accept-all", 100, Action.ACCEPT),)).merged(
    load_rulepack()
)
PERMISSIVE = Policy(rules=_PACK_ON_ACCEPT_ALL.rules, default_action=Action.ACCEPT)
CTX = Context(
    user="alice",
    groups=frozenset({"ops"}),
    cluster="prod",
    account="bastion",
    workspace=PurePosixPath("/work/session"),
)


def _ref(text: str) -> ResourceRef:
    kind_name, _, namespace = text.partition("@")
    kind, _, name = kind_name.partition("/")
    return ResourceRef(kind, name or None, namespace or None)


def outcome(
    line: str,
    policy: Policy = POLICY,
    file_kinds: list[str] | None = None,
    risky_manifest: bool = False,
) -> tuple[str, str | None]:
    """("shell", None) or (action, rule id); refusals by the parser are ("refused", ...).
    ``risky_manifest``: the driver found pod escape risks in what the command reads."""
    try:
        parsed = parse_line(line)
    except ShellRefused:
        return "shell", None
    if file_kinds is not None or risky_manifest:
        try:
            command = parse_command(parsed.first.argv)
        except CommandRefused:
            return "refused", REFUSED
        if risky_manifest:
            command = replace(command, privileged=True)
        if file_kinds is not None:
            command = command.with_file_kinds(_ref(k) for k in file_kinds)
        verdict = decide(command, CTX, policy)
    else:
        verdict = decide(parsed, CTX, policy)
    if verdict.rule_id == REFUSED:
        return "refused", verdict.rule_id
    return str(verdict.action), verdict.rule_id


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 60
    assert {entry["expect"] for entry in CORPUS} == {"shell", "refused", "reject", "review"}


@pytest.mark.parametrize(
    "entry", CORPUS, ids=[f"{i:03d}:{e['line'][:50]!r}" for i, e in enumerate(CORPUS)]
)
def test_corpus_entry(entry: dict[str, Any]):
    line = entry["line"] + "a" * entry.get("pad", 0)
    risky = bool(entry.get("risky_manifest"))
    action, rule_id = outcome(line, file_kinds=entry.get("file_kinds"), risky_manifest=risky)
    assert action not in ("accept", "warn"), f"{line!r} was allowed by {rule_id}"
    assert action == entry["expect"], f"{line!r}: got {action} ({rule_id})"
    if "rule" in entry:
        assert rule_id == entry["rule"]
    permissive, permissive_rule = outcome(
        line, PERMISSIVE, file_kinds=entry.get("file_kinds"), risky_manifest=risky
    )
    assert permissive not in ("accept", "warn"), (
        f"{line!r} allowed on accept-all by {permissive_rule}"
    )


# Generated variations -------------------------------------------------------------------------


def _quote(draw: st.DrawFn, word: str) -> str:
    """Spell one word in a random but equivalent shell form."""
    style = draw(st.sampled_from(["plain", "single", "double", "split", "escape", "mixed"]))
    if style == "plain":
        return shlex.quote(word)
    if style == "single":
        return "'" + word.replace("'", "'\\''") + "'"
    if style == "double":
        return '"' + "".join("\\" + c if c in '"\\$`' else c for c in word) + '"'
    if style == "split" and len(word) > 1:
        cut = draw(st.integers(1, len(word) - 1))
        return shlex.quote(word[:cut]) + '""' + shlex.quote(word[cut:])
    if style == "escape":
        return "".join(
            "\\" + c
            if c.isalnum() and draw(st.booleans())
            else shlex.quote(c)
            if not c.isalnum()
            else c
            for c in word
        )
    return "".join(
        draw(st.sampled_from(["{}", "'{}'", '"{}"'])).format(c) if c.isalnum() else shlex.quote(c)
        for c in word
    )


def _namespace_flag(draw: st.DrawFn, namespace: str) -> list[str]:
    form = draw(st.sampled_from(["-n", "-nX", "-n=", "--namespace", "--namespace="]))
    if form == "-n":
        return ["-n", namespace]
    if form == "-nX":
        return ["-n" + namespace]
    if form == "-n=":
        return ["-n=" + namespace]
    if form == "--namespace":
        return ["--namespace", namespace]
    return ["--namespace=" + namespace]


_NOISE = [
    ["--wait=false"],
    ["--grace-period=0"],
    ["--force"],
    ["--ignore-not-found"],
    ["--request-timeout=5s"],
    ["-v", "2"],
    ["--v=1"],
    ["--warnings-as-errors"],
    ["--dry-run=none"],
    ["--cascade=foreground"],
    ["--timeout", "30s"],
]

_NAMESPACE_KINDS = ["ns", "NS", "namespace", "namespaces", "Namespace", "namespaces.v1.", "ns."]
_POD_KINDS = ["po", "pod", "pods", "Pod", "PODS", "pods.v1."]
_SECRET_KINDS = ["secret", "secrets", "Secret", "SECRETS", "secret.v1.", "secrets."]
_DEPLOY_KINDS = ["deploy", "deployment", "deployments", "deployment.apps", "deployments.v1.apps"]
_SECRET_OUTPUTS = [
    ["-o", "yaml"],
    ["-oyaml"],
    ["-o=json"],
    ["--output", "json"],
    ["--output=yaml"],
    ["-o", "jsonpath={.data}"],
    ["-o", "go-template={{.data}}"],
    ["-o", "custom-columns=D:.data"],
    ["--template={{.data}}"],
    ["-o", "JSON"],
]
_ZERO = ["0", "00", "-0", "+0", "0x0", "0X0", "0o0", "0b0", "000"]


def _target(draw: st.DrawFn, kinds: list[str], name: str) -> list[str]:
    kind = draw(st.sampled_from(kinds))
    if draw(st.booleans()):
        return [f"{kind}/{name}"]
    return [kind, name]


@st.composite
def high_risk_lines(draw: st.DrawFn) -> str:
    """A high-risk kubectl command with its argument groups (the target, each flag with its
    value) in random order, random flag spellings, kind aliases and quoting."""
    scenario = draw(
        st.sampled_from(
            [
                "delete-ns",
                "delete-all",
                "delete-A",
                "kube-system",
                "scale-zero",
                "secret-data",
                "exec",
                "debug-node",
                "privileged-run",
            ]
        )
    )
    head: list[str] = []
    groups: list[list[str]]
    tail: list[str] = []
    if scenario == "delete-ns":
        verb = "delete"
        groups = [_target(draw, _NAMESPACE_KINDS, "prod")]
    elif scenario == "delete-all":
        verb = "delete"
        groups = [
            [draw(st.sampled_from(_POD_KINDS))],
            [draw(st.sampled_from(["--all", "--all=true", "--all=1"]))],
        ]
    elif scenario == "delete-A":
        verb = "delete"
        groups = [
            _target(draw, _POD_KINDS, "x"),
            [draw(st.sampled_from(["-A", "--all-namespaces", "--all_namespaces=True"]))],
        ]
    elif scenario == "kube-system":
        verb = "delete"
        groups = [_target(draw, _POD_KINDS + _DEPLOY_KINDS, "coredns")]
        flag = _namespace_flag(draw, "kube-system")
        if draw(st.booleans()):
            head.extend(flag)
        else:
            groups.append(flag)
    elif scenario == "scale-zero":
        verb = "scale"
        zero = draw(st.sampled_from(_ZERO))
        groups = [
            _target(draw, _DEPLOY_KINDS, "web"),
            draw(st.sampled_from([["--replicas", zero], ["--replicas=" + zero]])),
        ]
    elif scenario == "secret-data":
        verb = "get"
        groups = [_target(draw, _SECRET_KINDS, "db"), draw(st.sampled_from(_SECRET_OUTPUTS))]
    elif scenario == "exec":
        verb = "exec"
        groups = [
            [draw(st.sampled_from(["web-0", "pod/web-0", "deploy/web"]))],
            [draw(st.sampled_from(["-it", "-ti", "-i", "--stdin", "-t"]))],
            draw(st.sampled_from([[], ["-c", "app"], ["--container=app"]])),
        ]
        tail = ["--", "sh", "-c", "id"]
    elif scenario == "debug-node":
        verb = "debug"
        groups = [
            [draw(st.sampled_from(["node/n1", "nodes/n1", "no/n1", "NODE/n1"]))],
            ["--image=busybox"],
            [draw(st.sampled_from(["-it", "--stdin", "-q"]))],
        ]
    else:
        verb = "run"
        groups = [
            ["x"],
            ["--image=busybox"],
            [
                draw(
                    st.sampled_from(
                        [
                            "--privileged",
                            "--privileged=true",
                            "--privileged=1",
                            '--overrides={"spec":{"hostPID":true}}',
                            '--overrides={"spec":{"HOSTNETWORK":true}}',
                        ]
                    )
                )
            ],
        ]
    if scenario not in ("exec", "debug-node", "privileged-run"):
        groups += draw(st.lists(st.sampled_from(_NOISE), max_size=3))
    ordered = draw(st.permutations(groups))
    global_flags = draw(st.sampled_from([[], ["--request-timeout=3s"], ["--warnings-as-errors"]]))
    words = ["kubectl", *global_flags, *head, verb, *(w for g in ordered for w in g), *tail]
    return " ".join(_quote(draw, w) for w in words)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(high_risk_lines())
def test_generated_high_risk_variants_are_never_allowed(line: str):
    try:
        parsed = parse_line(line)
    except ShellRefused:
        return
    for policy in (POLICY, PERMISSIVE):
        verdict = decide(parsed, CTX, policy)
        assert not verdict.allowed, f"{line!r} allowed by {verdict.rule_id}"
        assert verdict.action in (Action.REJECT, Action.REVIEW)


@settings(max_examples=300, deadline=None)
@given(high_risk_lines())
def test_generated_variants_mostly_reach_the_policy(line: str):
    """The quoting variations are valid bash: the shell must accept them (otherwise the
    property above would be vacuous), except where bashlex's own quirks force a refusal."""
    try:
        parse_line(line)
    except ShellRefused as exc:
        assert "ambiguous" in exc.reason, (line, exc.reason)
