"""The bastion's command policy: a parsed command and its context → a :class:`CommandVerdict`.

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

Pure: what a policy may name is checked by :mod:`casemate.bastion.policycheck` when a
:class:`Policy` is built. Policies are stored as YAML (``version: 1``;
:mod:`casemate.bastion.policyyaml`), validated strictly: unknown keys, wrong types,
bad regular expressions, unknown actions, verbs, kinds, flags or groups, duplicate rule ids and
duplicate YAML keys are :class:`~casemate.errors.PolicyError` with the location.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any, ClassVar

from casemate.bastion.filters import FILTERS, FilterRefusal, check_filter
from casemate.bastion.kinds import is_builtin, is_namespaced
from casemate.bastion.kubectl import (
    CommandRefused,
    KubeCommand,
    check_paths,
    parse_command,
    resolve_in_workspace,
)
from casemate.bastion.policycheck import BUILTIN_GROUPS, is_glob, resolve_verbs, validate_policy
from casemate.bastion.shell import Command, ParsedLine
from casemate.core.policyfile import YamlDocument
from casemate.core.rulescope import (
    AppliesTo,
    RuleAction,
    ScopedRule,
    matches_any,
    merge_by_id,
    walk_order,
)
from casemate.errors import PolicyError

__all__ = [
    "BUILTIN_GROUPS",
    "CURRENT_VERSION",
    "REFUSED",
    "CommandAction",
    "AppliesTo",
    "Context",
    "FlagCondition",
    "Notice",
    "Policy",
    "Rule",
    "RuleMatch",
    "CommandVerdict",
    "decide",
    "default_policy",
    "load_baseline",
    "load_rulepack",
]

CURRENT_VERSION = 1
REFUSED = "casemate.refused"


class CommandAction(RuleAction):
    """In order of severity (see :class:`~casemate.core.rulescope.RuleAction`)."""

    ACCEPT = "accept"
    WARN = "warn"
    REVIEW = "review"
    REJECT = "reject"


# Tri-state matching -------------------------------------------------------------------------

_NO, _MAYBE, _YES = 0, 1, 2


_any = matches_any


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
        if open_category and any(is_glob(p) or not is_builtin(p) for p in self.kinds):
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
class Rule(ScopedRule[CommandAction, RuleMatch]):
    """A command rule (fields and scope: :class:`~casemate.core.rulescope.ScopedRule`)."""

    match: RuleMatch = RuleMatch()


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
class CommandVerdict:
    action: CommandAction
    rule_id: str | None
    reason: str
    warnings: tuple[Notice, ...] = ()
    stage: int | None = None

    @property
    def allowed(self) -> bool:
        """Whether the command may run now (accept, or accept with warnings)."""
        return self.action in (CommandAction.ACCEPT, CommandAction.WARN)


@dataclass(frozen=True)
class Policy(YamlDocument):
    """The command policy: rules, the default action, named groups of commands, the version,
    and the site's API rules. Its YAML form: :mod:`casemate.bastion.policyyaml`."""

    _yaml_codec: ClassVar[str] = "casemate.bastion.policyyaml"
    _yaml_source: ClassVar[str] = "<policy>"

    rules: tuple[Rule, ...] = ()
    default_action: CommandAction = CommandAction.REJECT
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
        validate_policy(self)
        object.__setattr__(
            self, "_verb_paths", {rule.id: resolve_verbs(rule, self) for rule in self.rules}
        )

    def all_groups(self) -> Mapping[str, tuple[str, ...]]:
        return {**BUILTIN_GROUPS, **self.groups}

    def verb_paths(self, rule: Rule) -> Mapping[str, frozenset[tuple[str, ...]]]:
        return self._verb_paths[rule.id]

    def merged(self, other: Policy) -> Policy:
        """This policy's rules followed by ``other``'s; a rule of ``other`` with an id already
        present replaces it (e.g. to disable a rule-pack rule). Groups are combined (a group
        defined in both must be identical); ``other``'s default action is kept."""
        groups = dict(self.groups)
        for name, members in other.groups.items():
            if name in groups and groups[name] != members:
                raise PolicyError(f"groups.{name}: defined differently in merged policies")
            groups[name] = members
        return Policy(
            rules=merge_by_id(self.rules, other.rules),
            default_action=other.default_action,
            groups=groups,
            api_rules=other.api_rules if other.api_rules is not None else self.api_rules,
        )


# Deciding ---------------------------------------------------------------------------------------


def decide(
    line: ParsedLine | KubeCommand,
    ctx: Context,
    policy: Policy,
    *,
    first: KubeCommand | None = None,
) -> CommandVerdict:
    """Decide one command line (or an already parsed kubectl/helm command). Never raises for a
    refused command: it becomes a ``reject`` verdict with rule id :data:`REFUSED`.

    ``first`` is the line's first stage as the driver already parsed it (with the kinds found
    in its manifests, :meth:`KubeCommand.with_file_kinds`); its argv must be the first
    stage's."""
    if isinstance(line, KubeCommand):
        return _decide_kube(line, ctx, policy, stage=None)
    if not line.stages:
        return CommandVerdict(CommandAction.REJECT, REFUSED, "empty command", stage=0)
    verdicts: list[CommandVerdict] = []
    if first is not None and tuple(first.argv) != tuple(line.first.argv):
        return CommandVerdict(
            CommandAction.REJECT, REFUSED, "internal: parsed command does not match", stage=0
        )
    try:
        command = first if first is not None else parse_command(line.first.argv)
    except CommandRefused as exc:
        return CommandVerdict(CommandAction.REJECT, REFUSED, exc.reason, stage=0)
    if line.redirect is not None:
        if ctx.workspace is None:
            return CommandVerdict(
                CommandAction.REJECT, REFUSED, "redirections need a session workspace", stage=0
            )
        try:
            resolve_in_workspace(line.redirect.path, ctx.workspace)
        except CommandRefused as exc:
            return CommandVerdict(
                CommandAction.REJECT, REFUSED, exc.reason, stage=len(line.stages) - 1
            )
    verdicts.append(_decide_kube(command, ctx, policy, stage=0))
    for index, stage in enumerate(line.filters, start=1):
        verdicts.append(_decide_filter(stage, ctx, policy, index))
    # the most severe decision wins (an accept with warnings counts as an accept), the
    # earliest stage among equals; warnings of every stage are kept
    worst = max(verdicts, key=lambda v: (_base(v.action).severity, -(v.stage or 0)))
    warnings = tuple(notice for verdict in verdicts for notice in verdict.warnings)
    action = _base(worst.action)
    if action == CommandAction.ACCEPT and warnings:
        action = CommandAction.WARN
    return replace(worst, action=action, warnings=warnings)


def _base(action: CommandAction) -> CommandAction:
    return CommandAction.ACCEPT if action == CommandAction.WARN else action


def _decide_kube(
    cmd: KubeCommand, ctx: Context, policy: Policy, stage: int | None
) -> CommandVerdict:
    if cmd.files or cmd.local_paths:
        if ctx.workspace is None:
            return CommandVerdict(
                CommandAction.REJECT,
                REFUSED,
                "local files are not allowed: no session workspace",
                stage=stage,
            )
        try:
            check_paths(cmd, ctx.workspace)
        except CommandRefused as exc:
            return CommandVerdict(CommandAction.REJECT, REFUSED, exc.reason, stage=stage)
    return _walk(cmd, ctx, policy, policy.default_action, stage)


def _decide_filter(stage: Command, ctx: Context, policy: Policy, index: int) -> CommandVerdict:
    if stage.program not in FILTERS:
        return CommandVerdict(
            CommandAction.REJECT,
            REFUSED,
            f"{stage.program!r} is not an allowed filter",
            stage=index,
        )
    try:
        check_filter(stage.argv)
    except FilterRefusal as exc:
        return CommandVerdict(CommandAction.REJECT, REFUSED, str(exc), stage=index)
    return _walk(stage, ctx, policy, CommandAction.ACCEPT, index)


def _walk(
    stage: KubeCommand | Command,
    ctx: Context,
    policy: Policy,
    default: CommandAction,
    index: int | None,
) -> CommandVerdict:
    warnings: list[Notice] = []
    for rule in walk_order(policy.rules):
        if not rule.applies_to.contains(ctx):
            continue
        accepting = rule.action == CommandAction.ACCEPT
        result = rule.match.evaluate(stage, ctx, policy.verb_paths(rule), every=accepting)
        if result == _NO or (result == _MAYBE and accepting):
            continue
        reason = rule.reason if result == _YES else f"{rule.reason} {_maybe_note(stage)}"
        if rule.action == CommandAction.WARN:
            warnings.append(Notice(rule.id, reason))
            continue
        action = (
            CommandAction.WARN if rule.action == CommandAction.ACCEPT and warnings else rule.action
        )
        return CommandVerdict(action, rule.id, reason, tuple(warnings), index)
    action = CommandAction.WARN if default == CommandAction.ACCEPT and warnings else default
    reason = (
        "no rule matched"
        if isinstance(stage, Command)
        else f"no rule matched; the policy's default is {default}"
    )
    return CommandVerdict(action, None, reason, tuple(warnings), index)


def _maybe_note(stage: KubeCommand | Command) -> str:
    if isinstance(stage, KubeCommand) and stage.needs_inspection:
        return "(assumed: the manifests or chart have not been inspected)"
    if isinstance(stage, KubeCommand) and (
        stage.selector is not None or stage.field_selector is not None
    ):
        return "(assumed: the selector may pick such objects)"
    return "(assumed: this cannot be ruled out from the command line)"


# The shipped policies (read from the package by casemate.bastion.policyyaml) ------------------


def load_rulepack() -> Policy:
    """The shipped high-risk rule pack (rejects, reviews and warnings; no accepts)."""
    from casemate.bastion.policyyaml import load_rulepack as load

    return load()


def load_baseline() -> Policy:
    """A baseline that accepts ordinary read, local and write commands (low priority)."""
    from casemate.bastion.policyyaml import load_baseline as load

    return load()


def default_policy() -> Policy:
    """Baseline plus rule pack: what a fresh installation enforces."""
    return load_baseline().merged(load_rulepack())


def migrate(data: object, *, source: str = "<policy>") -> dict[str, Any]:
    """Bring a policy document to :data:`CURRENT_VERSION` (or raise PolicyError); see
    :func:`casemate.bastion.policyyaml.migrate`."""
    from casemate.bastion.policyyaml import migrate as step_by_step

    return step_by_step(data, source=source)
