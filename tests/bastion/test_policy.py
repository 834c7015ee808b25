from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.bastion import policyyaml as policy_module
from casemate.bastion.kubectl import ResourceRef, parse_command
from casemate.bastion.policy import (
    BUILTIN_GROUPS,
    REFUSED,
    AppliesTo,
    Context,
    FlagCondition,
    Policy,
    Rule,
    RuleMatch,
    decide,
    default_policy,
    load_baseline,
    load_rulepack,
    migrate,
)
from casemate.bastion.policy import (
    CommandAction as Action,
)
from casemate.bastion.policy import (
    CommandVerdict as Verdict,
)
from casemate.bastion.shell import Command, ParsedLine, ShellRefused, parse_line
from casemate.errors import PolicyError

WS = PurePosixPath("/work/session")
CTX = Context(
    user="alice", groups=frozenset({"ops"}), cluster="prod", account="bastion", workspace=WS
)


def verdict(line: str, policy: Policy, ctx: Context = CTX) -> Verdict:
    return decide(parse_line(line), ctx, policy)


def rule(rule_id: str, priority: int, action: str, **match: Any) -> Rule:
    return Rule(rule_id, priority, Action(action), RuleMatch(**match))


def policy(*rules: Rule, default: Action = Action.REJECT) -> Policy:
    return Policy(rules=rules, default_action=default)


# The shipped policies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "kubectl get pods -n app -o wide",
        "kubectl logs deploy/x -c y --tail=50 | grep error | head",
        "kubectl get po -A",
        "kubectl describe deploy web -n app",
        "kubectl get deploy web -o yaml",
        "kubectl get events --sort-by=.lastTimestamp | tail -20",
        "kubectl top pod -n app --containers",
        "kubectl get po -o json | jq -r '.items[].metadata.name' | sort | uniq -c",
        "kubectl rollout status deploy/web",
        "kubectl rollout restart deploy/web -n app",
        "kubectl rollout undo deploy/web",
        "kubectl scale deploy web --replicas=3",
        "kubectl set image deploy/web app=nginx:1.27",
        "kubectl delete pod web-0 -n app",
        "kubectl label po web-0 tier=front",
        "kubectl create cm cfg --from-literal=a=b",
        "kubectl create secret generic s --from-literal=a=b -n app",
        "kubectl apply -f ./app.yaml --dry-run=server",
        "kubectl diff -f ./app.yaml",
        "kubectl explain deployment.spec.strategy",
        "kubectl api-resources --namespaced",
        "kubectl auth can-i create deployments -n app",
        "kubectl version --client",
        "kubectl config get-contexts",
        "kubectl config current-context",
        "kubectl kustomize ./overlay",
        "helm list -A",
        "helm status web -n app",
        "helm history web",
        "helm template web ./chart",
        "helm lint ./chart",
        "helm upgrade --install web ./chart -n app -f ./values.yaml",
        "helm version",
    ],
)
def test_default_policy_accepts_ordinary_work(line: str):
    parsed = parse_line(line)
    command = parse_command(parsed.first.argv)
    if command.needs_inspection:
        command = command.with_file_kinds([ResourceRef("deployments", "web")])
        result = decide(command, CTX, default_policy())
    else:
        result = decide(parsed, CTX, default_policy())
    assert result.action == Action.ACCEPT, (line, result)
    assert result.allowed


@pytest.mark.parametrize(
    ("line", "rule_id"),
    [
        ("kubectl get secret db", "k8s.secret-read"),
        ("kubectl cordon n1", "k8s.cordon"),
        ("kubectl get --raw /api/v1/namespaces", "k8s.raw-read"),
        ("helm get values web", "helm.release-data"),
    ],
)
def test_default_policy_warns(line: str, rule_id: str):
    result = verdict(line, default_policy())
    assert result.action == Action.WARN
    assert result.allowed
    assert [n.rule_id for n in result.warnings] == [rule_id]


def test_rulepack_never_accepts():
    pack = load_rulepack()
    assert pack.default_action == Action.REJECT
    assert all(r.action != Action.ACCEPT for r in pack.rules)
    assert len(pack.rules) >= 30
    assert all(r.description for r in pack.rules)
    assert len({r.id for r in pack.rules}) == len(pack.rules)


def test_rulepack_alone_rejects_by_default():
    assert verdict("kubectl get po", load_rulepack()).action == Action.REJECT
    assert verdict("kubectl get po", load_baseline()).action == Action.ACCEPT


def test_shipped_policies_round_trip():
    for shipped in (load_rulepack(), load_baseline(), default_policy()):
        assert Policy.from_yaml(shipped.to_yaml()) == shipped
        assert Policy.from_dict(shipped.to_dict()) == shipped


# Decision semantics -------------------------------------------------------------------------


def test_highest_priority_wins():
    p = policy(
        rule("low", 10, "reject", verbs=("get",)), rule("high", 20, "accept", verbs=("get",))
    )
    result = verdict("kubectl get po", p)
    assert (result.action, result.rule_id) == (Action.ACCEPT, "high")


def test_ties_are_broken_by_severity():
    rules = [
        rule("a", 10, "accept", verbs=("get",)),
        rule("v", 10, "review", verbs=("get",)),
        rule("r", 10, "reject", verbs=("get",)),
    ]
    assert verdict("kubectl get po", policy(*rules)).rule_id == "r"
    assert verdict("kubectl get po", policy(*rules[:2])).rule_id == "v"


def test_warn_is_collected_and_evaluation_continues():
    p = policy(
        rule("w1", 50, "warn", verbs=("get",)),
        rule("w2", 40, "warn", kinds=("pods",)),
        rule("ok", 30, "accept", verbs=("get",)),
        rule("w3", 20, "warn", verbs=("get",)),  # below the terminal rule: not reached
    )
    result = verdict("kubectl get po", p)
    assert result.action == Action.WARN
    assert result.rule_id == "ok"
    assert [n.rule_id for n in result.warnings] == ["w1", "w2"]
    assert result.allowed


def test_warnings_stay_with_a_stricter_decision():
    p = policy(rule("w", 50, "warn", verbs=("get",)), rule("no", 30, "review", verbs=("get",)))
    result = verdict("kubectl get po", p)
    assert result.action == Action.REVIEW
    assert [n.rule_id for n in result.warnings] == ["w"]


def test_warn_on_top_of_default():
    result = verdict("kubectl get po", policy(rule("w", 1, "warn"), default=Action.ACCEPT))
    assert (result.action, result.rule_id) == (Action.WARN, None)
    result = verdict("kubectl get po", policy(rule("w", 1, "warn")))
    assert result.action == Action.REJECT
    assert result.warnings[0].rule_id == "w"


def test_default_action_fails_closed():
    result = verdict("kubectl get po", Policy())
    assert result.action == Action.REJECT
    assert result.rule_id is None
    assert "default" in result.reason
    assert verdict("kubectl get po", Policy(default_action=Action.REVIEW)).action == Action.REVIEW


def test_disabled_rules_are_ignored():
    p = Policy(rules=(Rule("off", 10, Action.ACCEPT, RuleMatch(), enabled=False),))
    assert verdict("kubectl get po", p).action == Action.REJECT


@pytest.mark.parametrize(
    ("applies", "ctx_changes", "matches"),
    [
        (AppliesTo(users=("alice",)), {}, True),
        (AppliesTo(users=("bob",)), {}, False),
        (AppliesTo(users=("a*",)), {}, True),
        (AppliesTo(groups=("ops",)), {}, True),
        (AppliesTo(groups=("dev",)), {}, False),
        (AppliesTo(groups=("dev",)), {"groups": frozenset({"dev", "x"})}, True),
        (AppliesTo(clusters=("prod",)), {}, True),
        (AppliesTo(clusters=("staging",)), {}, False),
        (AppliesTo(accounts=("bastion",)), {}, True),
        (AppliesTo(accounts=("admin",)), {}, False),
        (AppliesTo(users=("alice",), clusters=("staging",)), {}, False),
    ],
)
def test_applies_to(applies: AppliesTo, ctx_changes: dict[str, Any], matches: bool):
    p = Policy(rules=(Rule("r", 10, Action.ACCEPT, RuleMatch(), applies),))
    ctx = Context(**{**CTX.__dict__, **ctx_changes})
    assert (verdict("kubectl get po", p, ctx).action == Action.ACCEPT) is matches


# Matching on meaning ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "line", "expected"),
    [
        ({"kinds": ("namespaces",)}, "kubectl delete NS/prod", True),
        ({"kinds": ("namespaces",)}, "kubectl delete po x", False),
        ({"kinds": ("*.cert-manager.io",)}, "kubectl get certificates.v1.cert-manager.io", True),
        ({"kinds": ("pods",)}, "kubectl get all", True),
        ({"names": ("prod-*",)}, "kubectl delete deploy prod-web", True),
        ({"names": ("prod-*",)}, "kubectl delete deploy web", False),
        ({"names": ("prod-*",)}, "kubectl get deploy", True),  # lists every name
        ({"namespaces": ("kube-*",)}, "kubectl get po -n kube-system", True),
        ({"namespaces": ("kube-*",)}, "kubectl get po", False),
        ({"namespaces": ("kube-*",)}, "kubectl get po -A", True),
        ({"namespaces": ("kube-system",)}, "kubectl delete ns kube-system", True),
        ({"namespaces": ("kube-system",)}, "kubectl cp kube-system/etcd:/x ./x", True),
        ({"namespaces": ("default",)}, "kubectl get po", True),  # the context's default
        ({"all_namespaces": True}, "kubectl get po -A", True),
        ({"all_namespaces": False}, "kubectl get po -A", False),
        ({"selector": True}, "kubectl delete po -l a=b", True),
        ({"selector": True}, "kubectl delete po --field-selector a=b", True),
        ({"selector": False}, "kubectl delete po x", True),
        ({"all": True}, "kubectl delete po --all", True),
        ({"bulk": True}, "kubectl delete po -l x", True),
        ({"bulk": True}, "kubectl delete po x", False),
        ({"flags": (FlagCondition("force"),)}, "kubectl delete po x --force", True),
        (
            {"flags": (FlagCondition("force", ("true",)),)},
            "kubectl delete po x --force=false",
            False,
        ),
        (
            {"flags": (FlagCondition("grace-period", ("0",)),)},
            "kubectl delete po x --grace-period=0",
            True,
        ),
        ({"output": ("json*",)}, "kubectl get po -o 'jsonpath={.a}'", True),
        ({"output": ("yaml",)}, "kubectl get po -o json", False),
        ({"data_output": True}, "kubectl get po -oyaml", True),
        ({"data_output": True}, "kubectl get po -o wide", False),
        ({"dry_run": True}, "kubectl apply -f ./a --dry-run=server", True),
        ({"dry_run": False}, "kubectl apply -f ./a --dry-run=server", False),
        ({"max_replicas": 1}, "kubectl scale deploy x --replicas=1", True),
        ({"max_replicas": 1}, "kubectl scale deploy x --replicas=2", False),
        ({"max_replicas": 1}, "kubectl get po", False),
        ({"privileged": True}, "kubectl run x --image=y --privileged", True),
        ({"regex": r"--namespace=kube-system"}, "kubectl -nkube-system get po", True),
        ({"regex": r"^kubectl delete namespaces/"}, "kubectl delete NS prod", True),
        ({"tools": ("helm",)}, "kubectl get po", False),
        ({"verbs": ("rollout",)}, "kubectl rollout undo deploy/x", True),
        ({"verbs": ("rollout undo",)}, "kubectl rollout status deploy/x", False),
        ({"verbs": ("create secret",)}, "kubectl create secret generic s", True),
        ({"verbs": ("create cm",)}, "kubectl create configmap c", True),
        ({"verbs": ("delete",)}, "helm uninstall web", True),  # helm's alias
        ({"verbs": ("kubectl:delete",)}, "helm uninstall web", False),
        ({"verbs": ("debug node",)}, "kubectl debug node/n1 --image=x", True),
        ({"verbs": ("debug node",)}, "kubectl debug web --image=x", False),
        ({"groups": ("read-only",)}, "kubectl get po", True),
        ({"groups": ("read-only",)}, "kubectl delete po x", False),
        ({"groups": ("write",)}, "helm create ./c", False),
        ({"groups": ("local",)}, "helm create ./c", True),
        ({"groups": ("local",)}, "kubectl create ns x", False),
    ],
)
def test_match_conditions(match: dict[str, Any], line: str, expected: bool):
    """Restricting rules: one matching object is enough."""
    p = policy(rule("r", 10, "review", **match), rule("ok", 1, "accept"))
    assert (verdict(line, p).rule_id == "r") is expected


@pytest.mark.parametrize(
    ("match", "line", "expected"),
    [
        ({"kinds": ("pods",)}, "kubectl delete pods x", True),
        ({"kinds": ("pods",)}, "kubectl delete pods,secrets x", False),
        ({"kinds": ("pods",)}, "kubectl delete pods/x secrets/y", False),
        ({"kinds": ("pods",)}, "kubectl get all", False),
        ({"kinds": ("*",)}, "kubectl get all", True),
        ({"kinds": ("pods",)}, "kubectl version", False),
        ({"names": ("prod-*",)}, "kubectl delete deploy prod-a prod-b", True),
        ({"names": ("prod-*",)}, "kubectl delete deploy prod-a web", False),
        ({"names": ("prod-*",)}, "kubectl get deploy", False),
        ({"names": ("prod-*",)}, "kubectl delete deploy prod-a -l x", False),
        ({"names": ("*",)}, "kubectl get deploy", True),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a get po", True),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a delete ns team-a", True),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a delete clusterrolebinding x", False),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a delete pods,clusterrolebindings x", False),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a get po -A", False),
        ({"namespaces": ("*",)}, "kubectl get po -A", True),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a get ns", False),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a get certificates.cert-manager.io", False),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a cp kube-system/etcd:/x ./x", False),
        ({"namespaces": ("team-*",)}, "kubectl -n team-a cp team-b/web:/x ./x", True),
        ({"namespaces": ("team-*",)}, "helm uninstall web -n team-a", True),
        (
            {"namespaces": ("team-*",)},
            "kubectl -n team-a get --raw /api/v1/namespaces/x/pods",
            False,
        ),
        ({"flags": (FlagCondition("container", ("app",)),)}, "kubectl logs web -c app", True),
        (
            {"flags": (FlagCondition("filename", ("./ok/*",)),)},
            "kubectl apply -f ./ok/a -f ./b",
            False,
        ),
    ],
)
def test_accept_conditions_are_universal(match: dict[str, Any], line: str, expected: bool):
    """Accept rules: every targeted object must match."""
    p = policy(rule("r", 10, "accept", **match))
    assert (verdict(line, p).rule_id == "r") is expected


def test_kind_aliases_in_rules_are_canonicalized():
    p = Policy.from_dict(
        {
            "version": 1,
            "rules": [
                {"id": "r", "priority": 1, "action": "reject", "match": {"kinds": ["NS", "deploy"]}}
            ],
        }
    )
    assert p.rules[0].match.kinds == ("namespaces", "deployments")


# "Maybe" conditions ---------------------------------------------------------------------------


def test_uninspected_manifests_count_against_accept_and_for_reject():
    reject = policy(rule("r", 10, "reject", kinds=("clusterroles",)), rule("ok", 1, "accept"))
    result = verdict("kubectl apply -f ./a.yaml", reject)
    assert result.rule_id == "r"
    assert "not been inspected" in result.reason
    accept = policy(rule("ok", 10, "accept", kinds=("deployments",)))
    assert verdict("kubectl apply -f ./a.yaml", accept).action == Action.REJECT
    command = parse_command(shlex.split("kubectl apply -f ./a.yaml"))
    inspected = command.with_file_kinds([ResourceRef("deployments", "web")])
    assert decide(inspected, CTX, accept).rule_id == "ok"
    assert decide(inspected, CTX, reject).rule_id == "ok"


def test_file_namespaces_count():
    p = policy(rule("sys", 10, "reject", namespaces=("kube-system",)), rule("ok", 1, "accept"))
    command = parse_command(shlex.split("kubectl apply -f ./a.yaml"))
    assert decide(command, CTX, p).rule_id == "sys"  # unknown: assume the worst
    in_app = command.with_file_kinds([ResourceRef("deployments", "web", "app")])
    assert decide(in_app, CTX, p).rule_id == "ok"
    in_system = command.with_file_kinds([ResourceRef("deployments", "web", "kube-system")])
    assert decide(in_system, CTX, p).rule_id == "sys"


def test_selected_names_are_maybe():
    p = policy(
        rule("r", 10, "review", names=("prod-*",)), rule("a", 5, "accept", names=("prod-*",))
    )
    result = verdict("kubectl delete deploy -l app=web", p)
    assert result.rule_id == "r"
    assert "selector" in result.reason
    only_accept = policy(rule("a", 5, "accept", names=("prod-*",)))
    assert verdict("kubectl delete deploy -l app=web", only_accept).action == Action.REJECT


def test_all_category_may_contain_custom_resources():
    p = policy(rule("r", 10, "reject", kinds=("widgets.example.com",)), rule("ok", 1, "accept"))
    assert verdict("kubectl delete all -l x=y", p).rule_id == "r"
    builtin = policy(rule("r", 10, "reject", kinds=("secrets",)), rule("ok", 1, "accept"))
    assert verdict("kubectl delete all -l x=y", builtin).rule_id == "ok"


# Pipelines, refusals, workspace ------------------------------------------------------------------


def test_pipeline_most_severe_stage_wins():
    p = policy(
        rule("ok", 10, "accept", verbs=("get",)),
        rule("no-jq", 10, "review", tools=("jq",)),
        rule("grep-warn", 10, "warn", tools=("grep",)),
    )
    result = verdict("kubectl get po -o json | jq . | grep x", p)
    assert (result.action, result.rule_id, result.stage) == (Action.REVIEW, "no-jq", 1)
    assert [n.rule_id for n in result.warnings] == ["grep-warn"]
    plain = verdict("kubectl get po | grep x", p)
    assert plain.action == Action.WARN
    assert (plain.rule_id, plain.stage) == ("ok", 0)


def test_filter_stages_default_to_accept_and_kube_rules_skip_them():
    p = policy(
        rule("ok", 10, "accept", verbs=("get",)), rule("all-reject", 5, "reject", kinds=("pods",))
    )
    assert verdict("kubectl get po | grep x | wc -l", p).action == Action.ACCEPT
    regex = policy(
        rule("ok", 10, "accept", verbs=("get",)), rule("pw", 20, "reject", regex="password")
    )
    assert verdict("kubectl get po | grep password", regex).rule_id == "pw"


def test_refused_commands_are_rejected_not_raised():
    result = verdict("kubectl --token=x get po", default_policy())
    assert (result.action, result.rule_id, result.stage) == (Action.REJECT, REFUSED, 0)
    assert "not allowed" in result.reason
    forged = ParsedLine("x", (Command(("kubectl", "get", "po")), Command(("sh", "-c", "id"))))
    assert decide(forged, CTX, default_policy()).rule_id == REFUSED
    forged_filter = ParsedLine(
        "x", (Command(("kubectl", "get", "po")), Command(("sort", "-o", "x")))
    )
    assert decide(forged_filter, CTX, default_policy()).rule_id == REFUSED
    assert decide(ParsedLine("", ()), CTX, default_policy()).rule_id == REFUSED


def test_local_paths_need_a_workspace():
    no_ws = Context(user="alice")
    result = verdict("kubectl apply -f ./a.yaml", default_policy(), no_ws)
    assert (result.action, result.rule_id) == (Action.REJECT, REFUSED)
    assert "workspace" in result.reason
    outside = verdict("kubectl apply -f ../a.yaml", default_policy())
    assert outside.rule_id == REFUSED
    command = parse_command(["kubectl", "apply", "-f", "/etc/x"])
    assert decide(command, CTX, default_policy()).rule_id == REFUSED


# Merging ---------------------------------------------------------------------------------------


def test_merge_overrides_by_id():
    site = Policy(
        rules=(
            Rule(
                "k8s.exec-into-pod", 900, Action.REVIEW, RuleMatch(verbs=("exec",)), enabled=False
            ),
            Rule(
                "oncall-exec",
                950,
                Action.ACCEPT,
                RuleMatch(verbs=("exec",)),
                AppliesTo(groups=("oncall",)),
            ),
        )
    )
    merged = default_policy().merged(site)
    assert verdict("kubectl exec web -- sh", merged).action == Action.REJECT  # no accept rule
    oncall = Context(user="bob", groups=frozenset({"oncall"}), workspace=WS)
    assert verdict("kubectl exec web -- sh", merged, oncall).rule_id == "oncall-exec"
    assert (
        verdict("kubectl exec web -- sh", default_policy(), oncall).rule_id == "k8s.exec-into-pod"
    )


def test_merge_groups():
    a = Policy(groups={"mine": ("get",)})
    assert a.merged(Policy(groups={"mine": ("get",)})).groups == {"mine": ("get",)}
    with pytest.raises(PolicyError, match="differently"):
        a.merged(Policy(groups={"mine": ("describe",)}))


def test_custom_groups():
    p = Policy(
        rules=(Rule("r", 1, Action.ACCEPT, RuleMatch(groups=("mine",))),),
        groups={"mine": ("rollout undo", "helm:get")},
    )
    assert verdict("kubectl rollout undo deploy/x", p).rule_id == "r"
    assert verdict("kubectl get po", p).rule_id is None
    assert verdict("helm get values web", p).rule_id == "r"


# YAML and validation -----------------------------------------------------------------------------

GOOD = """
version: 1
default_action: review
groups:
  deploys: [apply, "rollout undo"]
rules:
  - id: team.deploys
    priority: 50
    action: accept
    description: Team deploys
    applies_to: {groups: [team], clusters: [staging]}
    match:
      groups: [deploys]
      namespaces: [team-*]
      flags: {force: ~, grace-period: 0, wait: [false, "true"]}
  - id: team.no-secrets
    priority: 60
    action: reject
    enabled: false
    match:
      kinds: [secret]
      regex: "-o(yaml|json)"
"""


def test_yaml_loading():
    p = Policy.from_yaml(GOOD)
    assert p.default_action == Action.REVIEW
    assert p.groups == {"deploys": ("apply", "rollout undo")}
    first, second = p.rules
    assert first.applies_to == AppliesTo(groups=("team",), clusters=("staging",))
    assert first.match.flags == (
        FlagCondition("force"),
        FlagCondition("grace-period", ("0",)),
        FlagCondition("wait", ("false", "true")),
    )
    assert second.enabled is False
    assert second.match.kinds == ("secrets",)
    assert Policy.from_yaml(p.to_yaml()) == p


def _with(path: str, value: Any) -> str:
    data = yaml.safe_load(GOOD)
    target = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is _DELETE:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return yaml.safe_dump(data)


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("bogus", 1, "<policy>: unknown key 'bogus'"),
        ("version", _DELETE, "version: expected an integer"),
        ("version", "1", "version: expected an integer"),
        ("version", 2, "newer than this Casemate understands"),
        ("version", 0, "no migration from version 0"),
        ("default_action", "allow", "default_action: unknown action 'allow'"),
        ("rules", {"a": 1}, "rules: expected a list"),
        ("rules.0.bogus", 1, "rules[0]: unknown key 'bogus'"),
        ("rules.0.id", "Bad Id", "rules[0].id: invalid rule id"),
        ("rules.0.id", _DELETE, "rules[0]: missing key 'id'"),
        ("rules.1.id", "team.deploys", "rules[1].id: duplicate rule id"),
        ("rules.0.priority", "high", "rules[0].priority: expected an integer"),
        ("rules.0.priority", True, "rules[0].priority: expected an integer"),
        ("rules.0.action", "deny", "rules[0].action: unknown action 'deny'"),
        ("rules.0.enabled", "yes", "rules[0].enabled: expected true or false"),
        ("rules.0.description", 3, "rules[0].description: expected a string"),
        ("rules.0.applies_to", {"teams": ["x"]}, "rules[0].applies_to: unknown key 'teams'"),
        ("rules.0.applies_to", {"users": "alice"}, "rules[0].applies_to.users: expected a list"),
        ("rules.0.match.verb", ["get"], "rules[0].match: unknown key 'verb'"),
        ("rules.0.match.verbs", ["delte"], "rules[0].match.verbs[0]: unknown command 'delte'"),
        ("rules.0.match.verbs", ["rollout frob"], "unknown command 'rollout frob'"),
        ("rules.0.match.groups", ["nope"], "rules[0].match.groups[0]: unknown group 'nope'"),
        ("rules.0.match.kinds", ["a b"], "rules[0].match.kinds[0]: invalid kind"),
        ("rules.0.match.tools", ["oc"], "rules[0].match.tools[0]: unknown tool 'oc'"),
        ("rules.0.match.flags", {"nope-flag": None}, "rules[0].match.flags: unknown flag"),
        (
            "rules.0.match.flags",
            {"force": {"a": 1}},
            "rules[0].match.flags.force: expected a string",
        ),
        ("rules.0.match.flags", ["force"], "rules[0].match.flags: expected a mapping"),
        ("rules.0.match.regex", "(", "rules[0].match.regex: invalid regular expression"),
        ("rules.0.match.all", "yes", "rules[0].match.all: expected true or false"),
        ("rules.0.match.max_replicas", -1, "max_replicas: must be 0 or more"),
        ("rules.0.match.max_replicas", "0", "rules[0].match.max_replicas: expected an integer"),
        ("rules.0.match.names", [1], "rules[0].match.names[0]: expected a string"),
        ("groups.read-only", ["get"], "groups.read-only: the built-in group cannot be redefined"),
        ("groups.Bad_Name", ["get"], "groups: invalid group name"),
        ("groups.deploys", ["frob"], "groups.deploys[0]: unknown command 'frob'"),
    ],
)
def test_validation_errors(path: str, value: Any, message: str):
    with pytest.raises(PolicyError) as info:
        Policy.from_yaml(_with(path, value))
    assert message in info.value.message


def test_filter_only_rules_cannot_use_kube_conditions():
    with pytest.raises(PolicyError, match="filters only"):
        Policy.from_dict(
            {
                "version": 1,
                "rules": [
                    {
                        "id": "r",
                        "priority": 1,
                        "action": "reject",
                        "match": {"tools": ["grep"], "verbs": ["get"]},
                    }
                ],
            }
        )


def test_yaml_errors_have_a_location():
    with pytest.raises(PolicyError, match="site.yaml: line 3: duplicate key 'rules'"):
        Policy.from_yaml("version: 1\nrules: []\nrules: []\n", source="site.yaml")
    with pytest.raises(PolicyError, match="site.yaml: not valid YAML"):
        Policy.from_yaml("version: [1\n", source="site.yaml")
    with pytest.raises(PolicyError, match="must be a mapping"):
        Policy.from_yaml("- 1\n")
    with pytest.raises(PolicyError, match="duplicate key 'id'"):
        Policy.from_yaml("version: 1\nrules:\n  - id: a\n    id: b\n")


def test_programmatic_policies_are_validated():
    with pytest.raises(PolicyError, match="duplicate rule id"):
        Policy(rules=(rule("a", 1, "accept"), rule("a", 2, "reject")))
    with pytest.raises(PolicyError, match="unknown group"):
        Policy(rules=(rule("a", 1, "accept", groups=("nope",)),))
    with pytest.raises(PolicyError, match="not a canonical kind"):
        Policy(rules=(rule("a", 1, "accept", kinds=("ns",)),))
    with pytest.raises(PolicyError, match="unknown command"):
        Policy(rules=(rule("a", 1, "accept", verbs=("frob",)),))
    with pytest.raises(PolicyError, match="unknown flag"):
        Policy(rules=(rule("a", 1, "accept", flags=(FlagCondition("nope"),)),))
    with pytest.raises(PolicyError, match="cannot be redefined"):
        Policy(groups={"write": ("get",)})


def test_migration_hook(monkeypatch: pytest.MonkeyPatch):
    def from_v0(document: dict[str, Any]) -> dict[str, Any]:
        document = dict(document)
        document["rules"] = [
            {"id": r["name"], "priority": r["priority"], "action": r["action"]}
            for r in document.pop("entries")
        ]
        return document

    monkeypatch.setitem(policy_module.MIGRATIONS, 0, from_v0)
    old = {"version": 0, "entries": [{"name": "r", "priority": 1, "action": "accept"}]}
    assert migrate(old)["version"] == 1
    loaded = Policy.from_dict(old)
    assert loaded.rules == (Rule("r", 1, Action.ACCEPT),)


def test_builtin_groups_resolve():
    for name, members in BUILTIN_GROUPS.items():
        assert Policy(rules=(Rule("r", 1, Action.ACCEPT, RuleMatch(groups=(name,))),)), members


# Properties ------------------------------------------------------------------------------------


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=120))
def test_decide_never_crashes(line: str):
    try:
        parsed = parse_line("kubectl " + line)
    except ShellRefused:
        return
    result = decide(parsed, CTX, default_policy())
    assert isinstance(result.action, Action)
