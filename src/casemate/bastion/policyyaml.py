"""The command policy as YAML: reading (strict, with the location of every error), writing,
versions (:data:`~casemate.bastion.policy.CURRENT_VERSION`, migrated step by step) and the shipped
policies (rule pack, baseline).

A policy document is read with the shared strict loader (:mod:`casemate.core.policyfile`:
duplicate keys refused), migrated to the current version, then every field is checked: unknown
keys, wrong types, bad regular expressions, unknown actions, verbs, kinds, flags or groups and
duplicate rule ids are :class:`~casemate.errors.PolicyError` naming the place
(``rules[3].match.verbs[0]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from casemate.bastion.commands import TOOLS
from casemate.bastion.filters import FILTERS
from casemate.bastion.kinds import canonical_kind
from casemate.bastion.policy import (
    CURRENT_VERSION,
    AppliesTo,
    CommandAction,
    FlagCondition,
    Policy,
    Rule,
    RuleMatch,
)
from casemate.bastion.policycheck import (
    BUILTIN_GROUPS,
    GROUP_NAME,
    RULE_ID,
    all_flag_names,
    is_glob,
    spec_known,
    validate_match,
)
from casemate.core.policyfields import (
    Migration,
    choice,
    integer,
    mapping,
    migrate_document,
    opt_bool,
    scalar_text,
    str_list,
    string,
)
from casemate.core.policyfile import At
from casemate.core.rulescope import match_to_dict
from casemate.errors import PolicyError

__all__ = [
    "MIGRATIONS",
    "default_policy",
    "load_baseline",
    "load_rulepack",
    "migrate",
    "document_from_dict",
    "document_to_dict",
]


def document_from_dict(data: object, *, source: str) -> Policy:
    """A policy from its document (migrated, then validated): :meth:`Policy.from_dict`."""
    return _read_policy(migrate(data, source=source), At(source, ""))


def document_to_dict(policy: Policy) -> dict[str, Any]:
    """The document of a policy: :meth:`Policy.to_dict`."""
    out: dict[str, Any] = {
        "version": policy.version,
        "default_action": str(policy.default_action),
    }
    if policy.groups:
        out["groups"] = {name: list(members) for name, members in policy.groups.items()}
    out["rules"] = [_rule_to_dict(rule) for rule in policy.rules]
    if policy.api_rules is not None:
        out["api_rules"] = dict(policy.api_rules)
    return out


# Shipped policies ---------------------------------------------------------------------------------


def _load_packaged(name: str) -> Policy:
    text = resources.files("casemate.bastion").joinpath(name).read_text(encoding="utf-8")
    return Policy.from_yaml(text, source=f"casemate/bastion/{name}")


def load_rulepack() -> Policy:
    """The shipped high-risk rule pack (rejects, reviews and warnings; no accepts)."""
    return _load_packaged("rulepack.yaml")


def load_baseline() -> Policy:
    """A baseline that accepts ordinary read, local and write commands (low priority)."""
    return _load_packaged("baseline.yaml")


def default_policy() -> Policy:
    """Baseline plus rule pack: what a fresh installation enforces."""
    return load_baseline().merged(load_rulepack())


# Reading YAML with locations ----------------------------------------------------------------------


def _action(value: object, at: At) -> CommandAction:
    return choice(value, at, CommandAction)


_MATCH_KEYS = (
    "tools",
    "verbs",
    "groups",
    "kinds",
    "names",
    "namespaces",
    "all_namespaces",
    "selector",
    "all",
    "bulk",
    "flags",
    "output",
    "data_output",
    "dry_run",
    "max_replicas",
    "privileged",
    "regex",
)
_RULE_KEYS = ("id", "priority", "action", "match", "applies_to", "description", "enabled")


def _read_policy(data: dict[str, Any], at: At) -> Policy:
    body = mapping(
        data, at, ("version", "default_action", "groups", "rules", "api_rules"), ("version",)
    )
    api_rules = body.get("api_rules")
    if api_rules is not None and not isinstance(api_rules, dict):
        raise (at / "api_rules").error("expected a mapping (an API rule set, version 1)")
    groups: dict[str, tuple[str, ...]] = {}
    raw_groups = mapping(body.get("groups") or {}, at / "groups", None)
    for name, members in raw_groups.items():
        if not GROUP_NAME.fullmatch(name):
            raise (at / "groups").error(f"invalid group name {name!r}")
        if name in BUILTIN_GROUPS:
            raise (at / "groups" / name).error("the built-in group cannot be redefined")
        groups[name] = str_list(members, at / "groups" / name)
        for index, member in enumerate(groups[name]):
            if not spec_known(member, tuple(TOOLS)):
                raise (at / "groups" / name / index).error(f"unknown command {member!r}")
    all_groups = {**BUILTIN_GROUPS, **groups}
    rules_data = body.get("rules", [])
    if not isinstance(rules_data, list):
        raise (at / "rules").error("expected a list of rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(rules_data):
        rule = _read_rule(item, at / "rules" / index, all_groups)
        if rule.id in seen:
            raise (at / "rules" / index / "id").error(f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        rules.append(rule)
    default = _action(body.get("default_action", "reject"), at / "default_action")
    return Policy(rules=tuple(rules), default_action=default, groups=groups, api_rules=api_rules)


def _read_rule(data: object, at: At, groups: Mapping[str, tuple[str, ...]]) -> Rule:
    body = mapping(data, at, _RULE_KEYS, ("id", "priority", "action"))
    rule_id = string(body["id"], at / "id")
    if not RULE_ID.fullmatch(rule_id):
        raise (at / "id").error(f"invalid rule id {rule_id!r} (lowercase, digits, . _ -)")
    applies_to = AppliesTo.read(body.get("applies_to"), at / "applies_to")
    enabled = opt_bool(body.get("enabled", True), at / "enabled")
    return Rule(
        id=rule_id,
        priority=integer(body["priority"], at / "priority"),
        action=_action(body["action"], at / "action"),
        match=_read_match(body.get("match") or {}, at / "match", groups),
        applies_to=applies_to,
        description=string(body.get("description", ""), at / "description"),
        enabled=True if enabled is None else enabled,
    )


def _read_match(data: object, at: At, groups: Mapping[str, tuple[str, ...]]) -> RuleMatch:
    body = mapping(data, at, _MATCH_KEYS)
    tools = str_list(body.get("tools"), at / "tools")
    for index, tool in enumerate(tools):
        if tool not in TOOLS and tool not in FILTERS:
            raise (at / "tools" / index).error(f"unknown tool {tool!r}")
    kube_tools = tuple(t for t in tools if t in TOOLS) if tools else tuple(TOOLS)
    if tools and not kube_tools and set(body) - {"tools", "regex"}:
        raise at.error("kubectl/helm conditions on a rule for filters only (use tools and regex)")
    verbs: list[str] = []
    for index, spec in enumerate(str_list(body.get("verbs"), at / "verbs")):
        if not spec_known(spec, kube_tools):
            raise (at / "verbs" / index).error(f"unknown command {spec!r}")
        verbs.append(" ".join(spec.split()))
    group_names = str_list(body.get("groups"), at / "groups")
    for index, group in enumerate(group_names):
        if group not in groups:
            raise (at / "groups" / index).error(f"unknown group {group!r}")
    kinds: list[str] = []
    for index, kind in enumerate(str_list(body.get("kinds"), at / "kinds")):
        lowered = kind.lower()
        canonical = lowered if is_glob(lowered) else canonical_kind(lowered)
        if canonical is None:
            raise (at / "kinds" / index).error(f"invalid kind {kind!r}")
        kinds.append(canonical)
    known_flags = frozenset().union(*(all_flag_names(t) for t in kube_tools))
    flag_conditions: list[FlagCondition] = []
    raw_flags = mapping(body.get("flags") or {}, at / "flags", None)
    for name, values in raw_flags.items():
        canonical_name = name.lstrip("-")
        if canonical_name not in known_flags:
            raise (at / "flags").error(f"unknown flag {name!r}")
        if values is None:
            texts: tuple[str, ...] = ()
        elif isinstance(values, list):
            texts = tuple(scalar_text(v, at / "flags" / name / i) for i, v in enumerate(values))
        else:
            texts = (scalar_text(values, at / "flags" / name),)
        flag_conditions.append(FlagCondition(canonical_name, texts))
    regex = body.get("regex")
    if regex is not None:
        regex = string(regex, at / "regex")
        try:
            re.compile(regex)
        except re.error as exc:
            raise (at / "regex").error(f"invalid regular expression: {exc}") from None
    max_replicas = body.get("max_replicas")
    match = RuleMatch(
        tools=tools,
        verbs=tuple(verbs),
        groups=group_names,
        kinds=tuple(kinds),
        names=str_list(body.get("names"), at / "names"),
        namespaces=str_list(body.get("namespaces"), at / "namespaces"),
        all_namespaces=opt_bool(body.get("all_namespaces"), at / "all_namespaces"),
        selector=opt_bool(body.get("selector"), at / "selector"),
        all=opt_bool(body.get("all"), at / "all"),
        bulk=opt_bool(body.get("bulk"), at / "bulk"),
        flags=tuple(flag_conditions),
        output=tuple(o.lower() for o in str_list(body.get("output"), at / "output")),
        data_output=opt_bool(body.get("data_output"), at / "data_output"),
        dry_run=opt_bool(body.get("dry_run"), at / "dry_run"),
        max_replicas=None if max_replicas is None else integer(max_replicas, at / "max_replicas"),
        privileged=opt_bool(body.get("privileged"), at / "privileged"),
        regex=regex,
    )
    try:
        validate_match(match, groups, at.path)
    except PolicyError as exc:
        raise at.error(exc.message) from None
    return match


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    flags = {"flags": lambda value: {c.name: list(c.values) or None for c in value}}
    return {**rule.head_to_dict(), "match": match_to_dict(rule.match, _MATCH_KEYS, flags)}


# Versions ----------------------------------------------------------------------

# MIGRATIONS[n] turns a version-n document into a version-(n+1) document. Readers apply them
# step by step; there is nothing to migrate yet.
MIGRATIONS: dict[int, Migration] = {}


def migrate(data: object, *, source: str = "<policy>") -> dict[str, Any]:
    """Bring a policy document to :data:`CURRENT_VERSION` (or raise PolicyError)."""
    return migrate_document(
        data, source=source, current=CURRENT_VERSION, migrations=MIGRATIONS, noun="policy"
    )
