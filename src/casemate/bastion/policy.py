"""The bastion's command policy: a parsed command and its context → a :class:`Verdict`.

Decision semantics
------------------
* A :class:`Rule` applies when it is enabled, its ``applies_to`` scope contains the context
  (empty lists mean everyone/everywhere), and its :class:`RuleMatch` matches the command.
* Matching is on meaning, not spelling: kinds are canonical (``po`` = ``pods``), flags are
  canonical long names, verbs are command paths with aliases resolved per tool.
* Conditions in a match are ANDed; the values listed for one condition are ORed.
* Conditions on the objects a command targets (kinds, names, namespaces, and the values of a
  repeated flag) are *existential* for ``reject``, ``review`` and ``warn`` rules (one matching
  object is enough) and *universal* for ``accept`` rules (every object must match): an accept
  rule for pods does not accept ``delete pods,secrets x``. Cluster-scoped objects are in no
  namespace (so ``-n team-a`` does not bring ``clusterrolebindings`` under a rule for
  ``team-*``), a namespace object is "in" itself, and ``--all-namespaces`` is in every
  namespace.
* Some conditions cannot always be decided from the command line: the kinds, names and
  namespaces of objects in manifests the driver has not inspected (``-f``, ``-k``, helm charts),
  the objects a selector picks, the custom resources in the ``all`` category. Such a condition
  is *maybe*. A maybe-match counts as a match for ``reject``, ``review`` and ``warn`` rules and
  as no match for ``accept`` rules: what cannot be known is assumed to be the worst.
* Rules are walked by priority (highest first), ties by severity (reject > review > warn >
  accept), then file order. A ``warn`` rule is not terminal: its notice is collected and the walk
  continues. The first ``accept``/``review``/``reject`` rule decides. If none matches, the
  policy's ``default_action`` decides (``reject`` by default: fail closed).
* An ``accept`` with collected warnings becomes ``warn`` (allowed, with notices shown and
  audited).
* A pipeline is decided stage by stage and the most severe stage wins. Filter stages (grep,
  jq, ...) were already confined by the restricted shell: rules may still match them (by
  ``tools`` or ``regex``), but when none does they are accepted rather than given the default.
* A command the parser refuses, or whose files lie outside the workspace, is rejected with
  rule id :data:`REFUSED`.

Policies are stored as YAML (``version: 1``), validated strictly: unknown keys, wrong types,
bad regular expressions, unknown actions, verbs, kinds, flags or groups, duplicate rule ids and
duplicate YAML keys are :class:`~casemate.errors.PolicyError` with the location.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

import yaml

from casemate.bastion.commands import TOOLS, VerbSpec
from casemate.bastion.filters import FILTERS, FilterRefusal, check_filter
from casemate.bastion.kinds import canonical_kind, is_builtin, is_namespaced
from casemate.bastion.kubectl import (
    CommandRefused,
    KubeCommand,
    canonical_command_path,
    check_paths,
    parse_command,
    resolve_in_workspace,
)
from casemate.bastion.shell import Command, ParsedLine
from casemate.core.policyfile import At, StrictLoader
from casemate.errors import PolicyError

__all__ = [
    "BUILTIN_GROUPS",
    "CURRENT_VERSION",
    "REFUSED",
    "Action",
    "AppliesTo",
    "Context",
    "FlagCondition",
    "Notice",
    "Policy",
    "Rule",
    "RuleMatch",
    "Verdict",
    "decide",
    "default_policy",
    "load_baseline",
    "load_rulepack",
]

CURRENT_VERSION = 1
REFUSED = "casemate.refused"


class Action(StrEnum):
    ACCEPT = "accept"
    WARN = "warn"
    REVIEW = "review"
    REJECT = "reject"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Action.ACCEPT: 0, Action.WARN: 1, Action.REVIEW: 2, Action.REJECT: 3}

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


# Tri-state matching -------------------------------------------------------------------------

_NO, _MAYBE, _YES = 0, 1, 2


def _any(values: Iterable[str], patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(value, pattern) for value in values for pattern in patterns)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


@dataclass(frozen=True)
class FlagCondition:
    """A flag (canonical long name) that must be present, with a value matching one of
    ``values`` (globs; booleans are ``"true"``/``"false"``) if any are given."""

    name: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleMatch:
    """What a rule matches. Every field is optional; unset fields do not constrain."""

    tools: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    all_namespaces: bool | None = None
    selector: bool | None = None
    all: bool | None = None
    bulk: bool | None = None
    flags: tuple[FlagCondition, ...] = ()
    output: tuple[str, ...] = ()
    data_output: bool | None = None
    dry_run: bool | None = None
    max_replicas: int | None = None
    privileged: bool | None = None
    regex: str | None = None
    _compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.regex is not None:
            object.__setattr__(self, "_compiled", re.compile(self.regex))

    @property
    def kube_only(self) -> bool:
        """Whether the match has conditions that only kubectl/helm commands can meet."""
        return bool(
            self.verbs
            or self.groups
            or self.kinds
            or self.names
            or self.namespaces
            or self.flags
            or self.output
        ) or any(
            value is not None
            for value in (
                self.all_namespaces,
                self.selector,
                self.all,
                self.bulk,
                self.data_output,
                self.dry_run,
                self.max_replicas,
                self.privileged,
            )
        )

    def evaluate(
        self,
        stage: KubeCommand | Command,
        ctx: Context,
        verb_paths: Mapping[str, frozenset[tuple[str, ...]]],
        *,
        every: bool = False,
    ) -> int:
        """_YES, _MAYBE or _NO. ``verb_paths`` maps a tool to the command paths the rule's
        verbs and groups resolve to for that tool. ``every`` selects universal semantics for
        the conditions on targeted objects (kinds, names, namespaces, repeated flag values):
        every object must match, as accept rules need; otherwise one matching object is
        enough, as restricting rules need."""
        if isinstance(stage, Command):
            return self._evaluate_filter(stage)
        return self._evaluate_kube(stage, ctx, verb_paths, every)

    def _evaluate_filter(self, stage: Command) -> int:
        if self.kube_only:
            return _NO
        if self.tools and stage.program not in self.tools:
            return _NO
        if self._compiled is not None and not self._compiled.search(" ".join(stage.argv)):
            return _NO
        return _YES

    def _evaluate_kube(
        self,
        cmd: KubeCommand,
        ctx: Context,
        verb_paths: Mapping[str, frozenset[tuple[str, ...]]],
        every: bool,
    ) -> int:
        result = _YES
        checks: tuple[Callable[[], int], ...] = (
            lambda: _YES if not self.tools or cmd.tool in self.tools else _NO,
            lambda: self._verbs(cmd, verb_paths),
            lambda: self._kinds(cmd, every),
            lambda: self._names(cmd, every),
            lambda: self._namespaces(cmd, ctx, every),
            lambda: _bool(self.all_namespaces, cmd.all_namespaces),
            lambda: _bool(
                self.selector, cmd.selector is not None or cmd.field_selector is not None
            ),
            lambda: _bool(self.all, cmd.all),
            lambda: _bool(self.bulk, cmd.bulk),
            lambda: self._flags(cmd, every),
            lambda: _YES if not self.output or _any([cmd.output or ""], self.output) else _NO,
            lambda: _bool(self.data_output, cmd.data_output),
            lambda: _bool(self.dry_run, cmd.dry_run != "none"),
            lambda: self._replicas(cmd),
            lambda: _bool(self.privileged, cmd.privileged),
            lambda: (
                _YES if self._compiled is None or self._compiled.search(cmd.normalized) else _NO
            ),
        )
        for check in checks:
            result = min(result, check())
            if result == _NO:
                return _NO
        return result

    def _verbs(self, cmd: KubeCommand, verb_paths: Mapping[str, frozenset[tuple[str, ...]]]) -> int:
        if not self.verbs and not self.groups:
            return _YES
        path = cmd.path
        for spec in verb_paths.get(cmd.tool, frozenset()):
            if path[: len(spec)] == spec:
                return _YES
        return _NO

    def _kinds(self, cmd: KubeCommand, every: bool) -> int:
        if not self.kinds:
            return _YES
        kinds = cmd.kinds
        # custom resources may join the "all" category: its members are not fully known
        open_category = "all" in kinds
        if every:
            if not kinds or cmd.needs_inspection:
                return _NO
            if open_category and "*" not in self.kinds:
                return _NO
            return _YES if all(_any([kind], self.kinds) for kind in kinds) else _NO
        if _any(kinds, self.kinds):
            return _YES
        if cmd.needs_inspection:
            return _MAYBE
        if open_category and any(_is_glob(p) or not is_builtin(p) for p in self.kinds):
            return _MAYBE
        return _NO

    def _names(self, cmd: KubeCommand, every: bool) -> int:
        if not self.names:
            return _YES
        refs = cmd.targets
        named = [ref.name for ref in refs if ref.name is not None]
        unnamed = cmd.all or any(ref.name is None for ref in cmd.resources)
        picked = cmd.selector is not None or cmd.field_selector is not None
        if every:
            if not refs or unnamed or picked or cmd.needs_inspection:
                return _YES if "*" in self.names and refs else _NO
            return _YES if all(_any([name], self.names) for name in named) else _NO
        if _any(named, self.names):
            return _YES
        if unnamed:
            return _MAYBE if picked and not cmd.all else _YES
        if cmd.needs_inspection:
            return _MAYBE
        return _NO

    def _namespaces(self, cmd: KubeCommand, ctx: Context, every: bool) -> int:
        if not self.namespaces:
            return _YES
        scope = _namespace_scope(cmd, ctx)
        if every:
            if scope.everywhere:
                return _YES if "*" in self.namespaces else _NO
            if not scope.spaces or scope.uncertain or scope.cluster_scoped:
                return _NO
            return _YES if all(_any([ns], self.namespaces) for ns in scope.spaces) else _NO
        if scope.everywhere or _any(scope.spaces, self.namespaces):
            return _YES
        return _MAYBE if scope.uncertain else _NO

    def _flags(self, cmd: KubeCommand, every: bool) -> int:
        for condition in self.flags:
            values = cmd.flag_values(condition.name)
            if not values:
                return _NO
            if not condition.values:
                continue
            matches = [_any([value], condition.values) for value in values]
            if not (all(matches) if every else any(matches)):
                return _NO
        return _YES

    def _replicas(self, cmd: KubeCommand) -> int:
        if self.max_replicas is None:
            return _YES
        if cmd.replicas is not None and cmd.replicas <= self.max_replicas:
            return _YES
        return _NO


@dataclass(frozen=True)
class _Scope:
    """The namespaces a command acts in: ``everywhere`` (all namespaces), or ``spaces``;
    ``uncertain`` when objects of unknown scope or uninspected manifests are involved;
    ``cluster_scoped`` when it also acts on objects that are in no namespace."""

    spaces: frozenset[str]
    everywhere: bool
    uncertain: bool
    cluster_scoped: bool


# Kinds that are namespaced although they are not Kubernetes resources.
_NAMESPACED_PSEUDO_KINDS = frozenset({"releases"})


def _namespace_scope(cmd: KubeCommand, ctx: Context) -> _Scope:
    default = cmd.namespace or ctx.namespace_default
    everywhere = cmd.all_namespaces
    uncertain = cmd.needs_inspection
    cluster_scoped = False
    spaces: set[str] = set()
    targets = cmd.targets
    if not targets:
        spaces.add(default)
    for ref in targets:
        if ref.namespace is not None:
            spaces.add(ref.namespace)
        elif ref.kind == "namespaces":
            if ref.name is not None:
                spaces.add(ref.name)  # acting on the namespace object itself
            else:
                everywhere = True  # every namespace object
        elif ref.kind in _NAMESPACED_PSEUDO_KINDS:
            spaces.add(default)
        else:
            namespaced = is_namespaced(ref.kind) if ref.kind != "all" else True
            if namespaced is None:
                uncertain = True  # a custom resource: namespaced or cluster-scoped
                spaces.add(default)
            elif namespaced:
                spaces.add(default)
            else:
                cluster_scoped = True
    return _Scope(frozenset(spaces), everywhere, uncertain, cluster_scoped)


def _bool(wanted: bool | None, actual: bool) -> int:
    return _YES if wanted is None or wanted == actual else _NO


@dataclass(frozen=True)
class AppliesTo:
    """Who and where a rule applies to (globs); an empty list means all."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()

    def contains(self, ctx: Context) -> bool:
        return (
            (not self.users or _any([ctx.user], self.users))
            and (not self.groups or _any(ctx.groups, self.groups))
            and (not self.clusters or _any([ctx.cluster], self.clusters))
            and (not self.accounts or _any([ctx.account], self.accounts))
        )


@dataclass(frozen=True)
class Rule:
    id: str
    priority: int
    action: Action
    match: RuleMatch = RuleMatch()
    applies_to: AppliesTo = AppliesTo()
    description: str = ""
    enabled: bool = True

    @property
    def reason(self) -> str:
        return self.description or f"rule {self.id}"


@dataclass(frozen=True)
class Context:
    """Who runs the command, where. ``namespace_default`` is the namespace kubectl uses when
    none is given (the session's kubeconfig context). ``workspace`` is the session's private
    directory; commands with local paths are refused without one."""

    user: str
    groups: frozenset[str] = frozenset()
    cluster: str = ""
    account: str = ""
    namespace_default: str = "default"
    workspace: PurePosixPath | None = None


@dataclass(frozen=True)
class Notice:
    rule_id: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    action: Action
    rule_id: str | None
    reason: str
    warnings: tuple[Notice, ...] = ()
    stage: int | None = None

    @property
    def allowed(self) -> bool:
        """Whether the command may run now (accept, or accept with warnings)."""
        return self.action in (Action.ACCEPT, Action.WARN)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    default_action: Action = Action.REJECT
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    version: int = CURRENT_VERSION
    #: The site's API-level rules (a :mod:`casemate.kubeproxy.rules` document, merged over
    #: the built-in ones by the gateway, which also validates them): versioned with the
    #: command policy, opaque here (the bastion does not depend on the API proxy).
    api_rules: Mapping[str, Any] | None = field(default=None, compare=False)

    _verb_paths: Mapping[str, Mapping[str, frozenset[tuple[str, ...]]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _validate_policy(self)
        object.__setattr__(
            self, "_verb_paths", {rule.id: _resolve_verbs(rule, self) for rule in self.rules}
        )

    def all_groups(self) -> Mapping[str, tuple[str, ...]]:
        return {**BUILTIN_GROUPS, **self.groups}

    def verb_paths(self, rule: Rule) -> Mapping[str, frozenset[tuple[str, ...]]]:
        return self._verb_paths[rule.id]

    def merged(self, other: Policy) -> Policy:
        """This policy's rules followed by ``other``'s; a rule of ``other`` with an id already
        present replaces it (e.g. to disable a rule-pack rule). Groups are combined (a group
        defined in both must be identical); ``other``'s default action is kept."""
        rules = {rule.id: rule for rule in self.rules}
        for rule in other.rules:
            rules[rule.id] = rule
        groups = dict(self.groups)
        for name, members in other.groups.items():
            if name in groups and groups[name] != members:
                raise PolicyError(f"groups.{name}: defined differently in merged policies")
            groups[name] = members
        return Policy(
            rules=tuple(rules.values()),
            default_action=other.default_action,
            groups=groups,
            api_rules=other.api_rules if other.api_rules is not None else self.api_rules,
        )

    # Serialization ---------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<policy>") -> Policy:
        try:
            data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - safe subclass
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc.message}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{source}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<policy>") -> Policy:
        return _read_policy(migrate(data, source=source), At(source, ""))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version, "default_action": str(self.default_action)}
        if self.groups:
            out["groups"] = {name: list(members) for name, members in self.groups.items()}
        out["rules"] = [_rule_to_dict(rule) for rule in self.rules]
        if self.api_rules is not None:
            out["api_rules"] = dict(self.api_rules)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# Deciding ---------------------------------------------------------------------------------------


def decide(
    line: ParsedLine | KubeCommand,
    ctx: Context,
    policy: Policy,
    *,
    first: KubeCommand | None = None,
) -> Verdict:
    """Decide one command line (or an already parsed kubectl/helm command). Never raises for a
    refused command: it becomes a ``reject`` verdict with rule id :data:`REFUSED`.

    ``first`` is the line's first stage as the driver already parsed it (with the kinds found
    in its manifests, :meth:`KubeCommand.with_file_kinds`); its argv must be the first
    stage's."""
    if isinstance(line, KubeCommand):
        return _decide_kube(line, ctx, policy, stage=None)
    if not line.stages:
        return Verdict(Action.REJECT, REFUSED, "empty command", stage=0)
    verdicts: list[Verdict] = []
    if first is not None and tuple(first.argv) != tuple(line.first.argv):
        return Verdict(Action.REJECT, REFUSED, "internal: parsed command does not match", stage=0)
    try:
        command = first if first is not None else parse_command(line.first.argv)
    except CommandRefused as exc:
        return Verdict(Action.REJECT, REFUSED, exc.reason, stage=0)
    if line.redirect is not None:
        if ctx.workspace is None:
            return Verdict(Action.REJECT, REFUSED, "redirections need a session workspace", stage=0)
        try:
            resolve_in_workspace(line.redirect.path, ctx.workspace)
        except CommandRefused as exc:
            return Verdict(Action.REJECT, REFUSED, exc.reason, stage=len(line.stages) - 1)
    verdicts.append(_decide_kube(command, ctx, policy, stage=0))
    for index, stage in enumerate(line.filters, start=1):
        verdicts.append(_decide_filter(stage, ctx, policy, index))
    # the most severe decision wins (an accept with warnings counts as an accept), the
    # earliest stage among equals; warnings of every stage are kept
    worst = max(verdicts, key=lambda v: (_base(v.action).severity, -(v.stage or 0)))
    warnings = tuple(notice for verdict in verdicts for notice in verdict.warnings)
    action = _base(worst.action)
    if action == Action.ACCEPT and warnings:
        action = Action.WARN
    return replace(worst, action=action, warnings=warnings)


def _base(action: Action) -> Action:
    return Action.ACCEPT if action == Action.WARN else action


def _decide_kube(cmd: KubeCommand, ctx: Context, policy: Policy, stage: int | None) -> Verdict:
    if cmd.files or cmd.local_paths:
        if ctx.workspace is None:
            return Verdict(
                Action.REJECT,
                REFUSED,
                "local files are not allowed: no session workspace",
                stage=stage,
            )
        try:
            check_paths(cmd, ctx.workspace)
        except CommandRefused as exc:
            return Verdict(Action.REJECT, REFUSED, exc.reason, stage=stage)
    return _walk(cmd, ctx, policy, policy.default_action, stage)


def _decide_filter(stage: Command, ctx: Context, policy: Policy, index: int) -> Verdict:
    if stage.program not in FILTERS:
        return Verdict(
            Action.REJECT, REFUSED, f"{stage.program!r} is not an allowed filter", stage=index
        )
    try:
        check_filter(stage.argv)
    except FilterRefusal as exc:
        return Verdict(Action.REJECT, REFUSED, str(exc), stage=index)
    return _walk(stage, ctx, policy, Action.ACCEPT, index)


def _walk(
    stage: KubeCommand | Command,
    ctx: Context,
    policy: Policy,
    default: Action,
    index: int | None,
) -> Verdict:
    ordered = sorted(
        (rule for rule in policy.rules if rule.enabled),
        key=lambda rule: (-rule.priority, -rule.action.severity),
    )
    warnings: list[Notice] = []
    for rule in ordered:
        if not rule.applies_to.contains(ctx):
            continue
        accepting = rule.action == Action.ACCEPT
        result = rule.match.evaluate(stage, ctx, policy.verb_paths(rule), every=accepting)
        if result == _NO or (result == _MAYBE and accepting):
            continue
        reason = rule.reason if result == _YES else f"{rule.reason} {_maybe_note(stage)}"
        if rule.action == Action.WARN:
            warnings.append(Notice(rule.id, reason))
            continue
        action = Action.WARN if rule.action == Action.ACCEPT and warnings else rule.action
        return Verdict(action, rule.id, reason, tuple(warnings), index)
    action = Action.WARN if default == Action.ACCEPT and warnings else default
    reason = (
        "no rule matched"
        if isinstance(stage, Command)
        else f"no rule matched; the policy's default is {default}"
    )
    return Verdict(action, None, reason, tuple(warnings), index)


def _maybe_note(stage: KubeCommand | Command) -> str:
    if isinstance(stage, KubeCommand) and stage.needs_inspection:
        return "(assumed: the manifests or chart have not been inspected)"
    if isinstance(stage, KubeCommand) and (
        stage.selector is not None or stage.field_selector is not None
    ):
        return "(assumed: the selector may pick such objects)"
    return "(assumed: this cannot be ruled out from the command line)"


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


# Validation and resolution ------------------------------------------------------------

_RULE_ID = re.compile(r"[a-z0-9][a-z0-9._-]*")
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def resolve_command_spec(spec: str, tool: str) -> tuple[str, ...] | None:
    """The command path a verb spec names for ``tool``: ``"rollout undo"``, ``"helm:get"``
    (only for helm), ``"un"`` (helm's alias of uninstall). None if it names nothing there."""
    prefix, colon, rest = spec.partition(":")
    if colon:
        if prefix != tool:
            return None
        spec = rest
    return canonical_command_path(tool, spec.split())


def _spec_known(spec: str, tools: Sequence[str]) -> bool:
    return any(resolve_command_spec(spec, tool) is not None for tool in tools)


def _tools_of(match: RuleMatch) -> tuple[str, ...]:
    return tuple(t for t in match.tools if t in TOOLS) if match.tools else tuple(TOOLS)


def _resolve_verbs(rule: Rule, policy: Policy) -> Mapping[str, frozenset[tuple[str, ...]]]:
    specs = list(rule.match.verbs)
    groups = policy.all_groups()
    for group in rule.match.groups:
        specs.extend(groups[group])
    resolved: dict[str, frozenset[tuple[str, ...]]] = {}
    for tool in TOOLS:
        paths = {resolve_command_spec(spec, tool) for spec in specs}
        resolved[tool] = frozenset(p for p in paths if p is not None)
    return resolved


def _all_flag_names(tool: str) -> frozenset[str]:
    names: set[str] = set()

    def walk(spec: VerbSpec) -> None:
        names.update(spec.flags)
        for sub in spec.subverbs.values():
            walk(sub)

    walk(TOOLS[tool].root)
    names.add("help")
    return frozenset(names)


def _validate_policy(policy: Policy) -> None:
    seen: set[str] = set()
    for name, members in policy.groups.items():
        if name in BUILTIN_GROUPS:
            raise PolicyError(f"groups.{name}: the built-in group cannot be redefined")
        for member in members:
            if not _spec_known(member, tuple(TOOLS)):
                raise PolicyError(f"groups.{name}: unknown command {member!r}")
    for rule in policy.rules:
        if rule.id in seen:
            raise PolicyError(f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        _validate_match(rule.match, policy.all_groups(), f"rule {rule.id}: match")


def _validate_match(match: RuleMatch, groups: Mapping[str, tuple[str, ...]], where: str) -> None:
    for tool in match.tools:
        if tool not in TOOLS and tool not in FILTERS:
            raise PolicyError(f"{where}.tools: unknown tool {tool!r}")
    kube_tools = _tools_of(match)
    if match.tools and not kube_tools and match.kube_only:
        raise PolicyError(f"{where}: kubectl/helm conditions on a rule for filters only")
    for spec in match.verbs:
        if not _spec_known(spec, kube_tools):
            raise PolicyError(f"{where}.verbs: unknown command {spec!r}")
    for group in match.groups:
        if group not in groups:
            raise PolicyError(f"{where}.groups: unknown group {group!r}")
    for kind in match.kinds:
        if kind != kind.lower() or (not _is_glob(kind) and canonical_kind(kind) != kind):
            raise PolicyError(f"{where}.kinds: {kind!r} is not a canonical kind")
    known_flags = frozenset().union(*(_all_flag_names(t) for t in kube_tools))
    for condition in match.flags:
        if condition.name not in known_flags:
            raise PolicyError(f"{where}.flags: unknown flag {condition.name!r}")
    if match.max_replicas is not None and match.max_replicas < 0:
        raise PolicyError(f"{where}.max_replicas: must be 0 or more")


# Reading YAML with locations ----------------------------------------------------------------------


def _mapping(
    value: object, at: At, allowed: Iterable[str] | None, required: Iterable[str] = ()
) -> dict[str, Any]:
    """A mapping with string keys; ``allowed`` None means any key."""
    if not isinstance(value, dict):
        raise at.error("expected a mapping")
    allowed_set = None if allowed is None else set(allowed)
    for key in value:
        if not isinstance(key, str):
            raise at.error(f"keys must be strings, not {key!r}")
        if allowed_set is not None and key not in allowed_set:
            raise at.error(f"unknown key {key!r} (allowed: {', '.join(sorted(allowed_set))})")
    for key in required:
        if key not in value:
            raise at.error(f"missing key {key!r}")
    return value


def _str(value: object, at: At) -> str:
    if not isinstance(value, str):
        raise at.error("expected a string")
    return value


def _int(value: object, at: At) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise at.error("expected an integer")
    return value


def _opt_bool(value: object, at: At) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise at.error("expected true or false")
    return value


def _str_list(value: object, at: At) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise at.error("expected a list of strings")
    return tuple(_str(item, at / index) for index, item in enumerate(value))


def _scalar_text(value: object, at: At) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise at.error("expected a string, number or boolean")


def _action(value: object, at: At) -> Action:
    text = _str(value, at)
    try:
        return Action(text)
    except ValueError:
        raise at.error(
            f"unknown action {text!r} (one of {', '.join(a.value for a in Action)})"
        ) from None


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
    body = _mapping(
        data, at, ("version", "default_action", "groups", "rules", "api_rules"), ("version",)
    )
    api_rules = body.get("api_rules")
    if api_rules is not None and not isinstance(api_rules, dict):
        raise (at / "api_rules").error("expected a mapping (an API rule set, version 1)")
    groups: dict[str, tuple[str, ...]] = {}
    raw_groups = _mapping(body.get("groups") or {}, at / "groups", None)
    for name, members in raw_groups.items():
        if not _GROUP_NAME.fullmatch(name):
            raise (at / "groups").error(f"invalid group name {name!r}")
        if name in BUILTIN_GROUPS:
            raise (at / "groups" / name).error("the built-in group cannot be redefined")
        groups[name] = _str_list(members, at / "groups" / name)
        for index, member in enumerate(groups[name]):
            if not _spec_known(member, tuple(TOOLS)):
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
    body = _mapping(data, at, _RULE_KEYS, ("id", "priority", "action"))
    rule_id = _str(body["id"], at / "id")
    if not _RULE_ID.fullmatch(rule_id):
        raise (at / "id").error(f"invalid rule id {rule_id!r} (lowercase, digits, . _ -)")
    applies = _mapping(
        body.get("applies_to") or {}, at / "applies_to", ("users", "groups", "clusters", "accounts")
    )
    enabled = _opt_bool(body.get("enabled", True), at / "enabled")
    return Rule(
        id=rule_id,
        priority=_int(body["priority"], at / "priority"),
        action=_action(body["action"], at / "action"),
        match=_read_match(body.get("match") or {}, at / "match", groups),
        applies_to=AppliesTo(
            users=_str_list(applies.get("users"), at / "applies_to" / "users"),
            groups=_str_list(applies.get("groups"), at / "applies_to" / "groups"),
            clusters=_str_list(applies.get("clusters"), at / "applies_to" / "clusters"),
            accounts=_str_list(applies.get("accounts"), at / "applies_to" / "accounts"),
        ),
        description=_str(body.get("description", ""), at / "description"),
        enabled=True if enabled is None else enabled,
    )


def _read_match(data: object, at: At, groups: Mapping[str, tuple[str, ...]]) -> RuleMatch:
    body = _mapping(data, at, _MATCH_KEYS)
    tools = _str_list(body.get("tools"), at / "tools")
    for index, tool in enumerate(tools):
        if tool not in TOOLS and tool not in FILTERS:
            raise (at / "tools" / index).error(f"unknown tool {tool!r}")
    kube_tools = tuple(t for t in tools if t in TOOLS) if tools else tuple(TOOLS)
    if tools and not kube_tools and set(body) - {"tools", "regex"}:
        raise at.error("kubectl/helm conditions on a rule for filters only (use tools and regex)")
    verbs: list[str] = []
    for index, spec in enumerate(_str_list(body.get("verbs"), at / "verbs")):
        if not _spec_known(spec, kube_tools):
            raise (at / "verbs" / index).error(f"unknown command {spec!r}")
        verbs.append(" ".join(spec.split()))
    group_names = _str_list(body.get("groups"), at / "groups")
    for index, group in enumerate(group_names):
        if group not in groups:
            raise (at / "groups" / index).error(f"unknown group {group!r}")
    kinds: list[str] = []
    for index, kind in enumerate(_str_list(body.get("kinds"), at / "kinds")):
        lowered = kind.lower()
        canonical = lowered if _is_glob(lowered) else canonical_kind(lowered)
        if canonical is None:
            raise (at / "kinds" / index).error(f"invalid kind {kind!r}")
        kinds.append(canonical)
    known_flags = frozenset().union(*(_all_flag_names(t) for t in kube_tools))
    flag_conditions: list[FlagCondition] = []
    raw_flags = _mapping(body.get("flags") or {}, at / "flags", None)
    for name, values in raw_flags.items():
        canonical_name = name.lstrip("-")
        if canonical_name not in known_flags:
            raise (at / "flags").error(f"unknown flag {name!r}")
        if values is None:
            texts: tuple[str, ...] = ()
        elif isinstance(values, list):
            texts = tuple(_scalar_text(v, at / "flags" / name / i) for i, v in enumerate(values))
        else:
            texts = (_scalar_text(values, at / "flags" / name),)
        flag_conditions.append(FlagCondition(canonical_name, texts))
    regex = body.get("regex")
    if regex is not None:
        regex = _str(regex, at / "regex")
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
        names=_str_list(body.get("names"), at / "names"),
        namespaces=_str_list(body.get("namespaces"), at / "namespaces"),
        all_namespaces=_opt_bool(body.get("all_namespaces"), at / "all_namespaces"),
        selector=_opt_bool(body.get("selector"), at / "selector"),
        all=_opt_bool(body.get("all"), at / "all"),
        bulk=_opt_bool(body.get("bulk"), at / "bulk"),
        flags=tuple(flag_conditions),
        output=tuple(o.lower() for o in _str_list(body.get("output"), at / "output")),
        data_output=_opt_bool(body.get("data_output"), at / "data_output"),
        dry_run=_opt_bool(body.get("dry_run"), at / "dry_run"),
        max_replicas=None if max_replicas is None else _int(max_replicas, at / "max_replicas"),
        privileged=_opt_bool(body.get("privileged"), at / "privileged"),
        regex=regex,
    )
    try:
        _validate_match(match, groups, at.path)
    except PolicyError as exc:
        raise at.error(exc.message) from None
    return match


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rule.id,
        "priority": rule.priority,
        "action": str(rule.action),
    }
    if rule.description:
        out["description"] = rule.description
    if not rule.enabled:
        out["enabled"] = False
    applies = {
        key: list(getattr(rule.applies_to, key))
        for key in ("users", "groups", "clusters", "accounts")
        if getattr(rule.applies_to, key)
    }
    if applies:
        out["applies_to"] = applies
    match: dict[str, Any] = {}
    for key in _MATCH_KEYS:
        value = getattr(rule.match, key)
        if key == "flags":
            if value:
                match["flags"] = {c.name: list(c.values) or None for c in value}
        elif isinstance(value, tuple):
            if value:
                match[key] = list(value)
        elif value is not None:
            match[key] = value
    out["match"] = match
    return out


# Versions ----------------------------------------------------------------------

Migration = Callable[[dict[str, Any]], dict[str, Any]]

# MIGRATIONS[n] turns a version-n document into a version-(n+1) document. Readers apply them
# step by step; there is nothing to migrate yet.
MIGRATIONS: dict[int, Migration] = {}


def migrate(data: object, *, source: str = "<policy>") -> dict[str, Any]:
    """Bring a policy document to :data:`CURRENT_VERSION` (or raise PolicyError)."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy must be a mapping")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise PolicyError(f"{source}: version: expected an integer (current: {CURRENT_VERSION})")
    if version > CURRENT_VERSION:
        raise PolicyError(
            f"{source}: version: {version} is newer than this Casemate understands "
            f"({CURRENT_VERSION})"
        )
    document = dict(data)
    while version < CURRENT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise PolicyError(f"{source}: version: no migration from version {version}")
        document = step(document)
        version += 1
        document["version"] = version
    return document
