"""What a command policy may name, checked when a :class:`~casemate.bastion.policy.Policy` is
built: the built-in command groups, known commands (per tool, aliases resolved), canonical kinds,
known flags, unique rule ids. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from casemate.bastion.commands import TOOLS, VerbSpec
from casemate.bastion.filters import FILTERS
from casemate.bastion.kinds import canonical_kind
from casemate.bastion.kubectl import canonical_command_path
from casemate.errors import PolicyError

if TYPE_CHECKING:
    from casemate.bastion.policy import Policy, Rule, RuleMatch

__all__ = [
    "BUILTIN_GROUPS",
    "GROUP_NAME",
    "RULE_ID",
    "all_flag_names",
    "is_glob",
    "resolve_command_spec",
    "resolve_verbs",
    "spec_known",
    "validate_match",
    "validate_policy",
]

# Named command groups usable in every policy (``groups: [read-only]``). Policies may add
# groups but not redefine these: the shipped rule pack relies on them. An entry is a command
# path, optionally limited to one tool ("helm:create" is helm's, "kubectl:create" kubectl's).
BUILTIN_GROUPS: Mapping[str, tuple[str, ...]] = {
    "read-only": (
        "get",
        "describe",
        "logs",
        "top",
        "explain",
        "api-resources",
        "api-versions",
        "version",
        "events",
        "auth can-i",
        "auth whoami",
        "config get-contexts",
        "config current-context",
        "rollout history",
        "rollout status",
        "wait",
        "diff",
        "cluster-info",
        "completion",
        "options",
        "help",
        "list",
        "status",
        "history",
        "show",
        "dependency list",
    ),
    "local": (
        "kubectl:kustomize",
        "helm:template",
        "helm:lint",
        "helm:package",
        "helm:create",
        "helm:verify",
    ),
    "write": (
        "kubectl:create",
        "apply",
        "replace",
        "patch",
        "delete",
        "label",
        "annotate",
        "set",
        "scale",
        "autoscale",
        "rollout restart",
        "rollout undo",
        "rollout pause",
        "rollout resume",
        "taint",
        "cordon",
        "uncordon",
        "drain",
        "expose",
        "run",
        "certificate",
        "auth reconcile",
        "install",
        "upgrade",
        "uninstall",
        "rollback",
        "test",
    ),
    "interactive": ("exec", "attach", "cp", "debug", "port-forward"),
}


def is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


# Validation and resolution ------------------------------------------------------------

RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def resolve_command_spec(spec: str, tool: str) -> tuple[str, ...] | None:
    """The command path a verb spec names for ``tool``: ``"rollout undo"``, ``"helm:get"``
    (only for helm), ``"un"`` (helm's alias of uninstall). None if it names nothing there."""
    prefix, colon, rest = spec.partition(":")
    if colon:
        if prefix != tool:
            return None
        spec = rest
    return canonical_command_path(tool, spec.split())


def spec_known(spec: str, tools: Sequence[str]) -> bool:
    return any(resolve_command_spec(spec, tool) is not None for tool in tools)


def _tools_of(match: RuleMatch) -> tuple[str, ...]:
    return tuple(t for t in match.tools if t in TOOLS) if match.tools else tuple(TOOLS)


def resolve_verbs(rule: Rule, policy: Policy) -> Mapping[str, frozenset[tuple[str, ...]]]:
    specs = list(rule.match.verbs)
    groups = policy.all_groups()
    for group in rule.match.groups:
        specs.extend(groups[group])
    resolved: dict[str, frozenset[tuple[str, ...]]] = {}
    for tool in TOOLS:
        paths = {resolve_command_spec(spec, tool) for spec in specs}
        resolved[tool] = frozenset(p for p in paths if p is not None)
    return resolved


def all_flag_names(tool: str) -> frozenset[str]:
    names: set[str] = set()

    def walk(spec: VerbSpec) -> None:
        names.update(spec.flags)
        for sub in spec.subverbs.values():
            walk(sub)

    walk(TOOLS[tool].root)
    names.add("help")
    return frozenset(names)


def validate_policy(policy: Policy) -> None:
    seen: set[str] = set()
    for name, members in policy.groups.items():
        if name in BUILTIN_GROUPS:
            raise PolicyError(f"groups.{name}: the built-in group cannot be redefined")
        for member in members:
            if not spec_known(member, tuple(TOOLS)):
                raise PolicyError(f"groups.{name}: unknown command {member!r}")
    for rule in policy.rules:
        if rule.id in seen:
            raise PolicyError(f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        validate_match(rule.match, policy.all_groups(), f"rule {rule.id}: match")


def validate_match(match: RuleMatch, groups: Mapping[str, tuple[str, ...]], where: str) -> None:
    for tool in match.tools:
        if tool not in TOOLS and tool not in FILTERS:
            raise PolicyError(f"{where}.tools: unknown tool {tool!r}")
    kube_tools = _tools_of(match)
    if match.tools and not kube_tools and match.kube_only:
        raise PolicyError(f"{where}: kubectl/helm conditions on a rule for filters only")
    for spec in match.verbs:
        if not spec_known(spec, kube_tools):
            raise PolicyError(f"{where}.verbs: unknown command {spec!r}")
    for group in match.groups:
        if group not in groups:
            raise PolicyError(f"{where}.groups: unknown group {group!r}")
    for kind in match.kinds:
        if kind != kind.lower() or (not is_glob(kind) and canonical_kind(kind) != kind):
            raise PolicyError(f"{where}.kinds: {kind!r} is not a canonical kind")
    known_flags = frozenset().union(*(all_flag_names(t) for t in kube_tools))
    for condition in match.flags:
        if condition.name not in known_flags:
            raise PolicyError(f"{where}.flags: unknown flag {condition.name!r}")
    if match.max_replicas is not None and match.max_replicas < 0:
        raise PolicyError(f"{where}.max_replicas: must be 0 or more")
