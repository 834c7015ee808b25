"""API-level rules: a classified request and the session's grant → an :class:`ApiVerdict`.

The proxy is the bastion's second layer: whatever command the first layer accepted, this
judges every HTTP request kubectl or helm actually sends.

Decision semantics
------------------
1. **The grant is a hard boundary** (no rule can widen it). A request in a namespace the grant
   does not cover is denied (rule ``grant.namespace``); the namespace object ``namespaces/NS``
   counts as being in ``NS``. A namespaced resource requested across all namespaces
   (``kubectl get pods -A``) is denied unless the grant covers every namespace (``"*"``) (rule
   ``grant.all-namespaces``).
2. **Rules** are walked by priority (highest first), ties by severity (deny > review > warn >
   allow), then order. ``warn`` is not terminal: its notice is collected (the proxy returns it
   as a ``Warning`` header, which kubectl prints, and audits it) and the walk continues. The
   first ``allow``/``review``/``deny`` decides; an allow with collected notices becomes
   ``warn``. No match: the rule set's ``default_action`` (``deny``: fail closed).
3. A rule applies when it is enabled, ``applies_to`` contains the session (users, groups,
   clusters, accounts; globs; empty means all) and every condition of its ``match`` holds
   (conditions are ANDed, the values of one condition ORed, values are globs):

   * ``verbs`` - Kubernetes verbs, the lower-case method for non-resource requests; the
     aliases ``read`` (get, list, watch) and ``write`` (create, update, patch, delete,
     deletecollection) and ``*``.
   * ``api_groups`` - ``""`` is the core group.
   * ``resources`` - RBAC style: ``pods`` is the resource alone, ``pods/exec`` a subresource,
     ``pods/*`` every subresource, ``*`` everything.
   * ``scopes`` - ``namespaced`` (a namespaced resource in one namespace), ``all-namespaces``,
     ``cluster`` (cluster-scoped objects, the namespace objects themselves included; unknown
     resources requested without a namespace count as cluster-scoped), ``non-resource``.
   * ``names``, ``namespaces`` - for ``deny``/``review``/``warn`` rules a request that
     addresses no single name (a list, a watch, a deletecollection) matches any ``names``,
     and an all-namespaces request matches any ``namespaces``: it covers them. ``allow`` rules
     need the request's own name or namespace to match.
   * ``paths`` - the request path (useful for non-resource URLs).
   * ``dry_run`` - ``true``/``false``: whether the write is ``dryRun=All``.
   * ``label_selectors`` - terms (globs) that must all be among the ``labelSelector`` terms
     (``owner=helm``).
   * What a create/update/patch body sets (:func:`~casemate.kubeproxy.body.inspect_body`:
     whole objects, merge, strategic-merge, JSON and apply patches): ``secret_types`` (a
     Secret's ``type``), ``pod_risks`` (:mod:`casemate.risks.pods` ids: ``privileged``,
     ``host-namespaces``, ``host-path``, ``capabilities``, ``privilege-escalation``,
     ``host-ports``, ``unreadable``), ``role_refs`` (a binding's ``Kind/name``),
     ``role_verbs`` (the verbs a Role grants; ``"[*]"`` is the literal ``*``) and
     ``replicas`` (``"0"``). A body that cannot be read (protobuf, bad JSON/YAML, duplicate
     keys, a JSON patch ``copy``/``move``), or a write whose body was not looked at, matches
     every such condition of ``deny``/``review``/``warn`` rules and none of ``allow`` rules.

``review`` means "a second person must approve": the proxy asks its reviewer, if it has one,
and otherwise refuses (fail closed).

Review previews. A grant with ``dry_run_only`` (the credential review previews run with, see
:class:`~casemate.kubeproxy.sessions.SessionStore`) is refused (rule ``preview.dry-run-only``)
every request that could change the cluster: a write without ``dryRun=All``, exec, attach,
port-forward and proxy connections, and non-resource requests other than GET/HEAD, whatever
kubectl was told. A dry run that a ``review`` rule holds passes for it (it shows what the
review is about); a read that a ``review`` rule holds is refused; ``deny`` rules apply as to
everyone.

Cluster-scoped reads. kubectl needs a few to work normally (``get ns``, ``get nodes``,
``describe`` of classes, CRDs for discovery of custom kinds), and they reveal names and
capacities, not workloads or data, so the default rules allow get/list/watch of namespaces,
nodes (not ``nodes/proxy`` or ``nodes/status``), storage/ingress/priority/runtime classes,
CSI drivers, CRDs and API services. The namespace list is *not* filtered to the grant:
filtering would mean rewriting JSON, protobuf, Table and watch-stream bodies, and namespace
names are not secret; reading a namespace object outside the grant is still denied, and the
cluster's RBAC of the system account still decides what the list returns. Every other
cluster-scoped kind (ClusterRoles, PersistentVolumes, webhooks, CSRs, …) is denied, reads
included.

The default rule set (:data:`casemate.kubeproxy.rulefile.DEFAULT_RULES_YAML`) allows discovery
reads, everything inside the granted namespaces, reads of a few harmless cluster-scoped kinds
(namespaces, nodes, classes, CRDs, API services) and the self-review requests of ``kubectl auth
whoami``/``can-i``; it denies namespace deletion, writes to cluster-scoped RBAC, admission
webhooks and policies, CRDs and CSRs (their approval included), minting service account tokens
(TokenRequest, and Secrets of type ``kubernetes.io/service-account-token``: credentials that
would bypass Casemate), every proxy subresource (``nodes/proxy`` reaches the kubelet), reading
Secrets (only Helm's own release records ``sh.helm.release.v1.*`` and lists with ``owner=helm``
are allowed: ``helm lookup`` and server dry runs read through the same requests) and workloads
of any kind with pod escape risks; exec, attach, port-forward, ephemeral containers,
delete-collection, scaling or patching replicas to zero, updating a Secret (the answer holds its
data), RoleBindings to anything but the ``view`` ClusterRole and Roles granting ``escalate``,
``bind``, ``impersonate`` or ``*`` need review; namespaced RBAC writes are warned about.
Everything else (other cluster-scoped reads, every other cluster-scoped write, non-resource URLs
beyond discovery) falls to the default: deny. A site allows more with its own higher-priority
rules, for example::

    - id: site.platform-storageclasses
      priority: 2000
      action: allow
      applies_to: {groups: [platform]}
      match: {verbs: [write], api_groups: [storage.k8s.io], resources: [storageclasses]}

Rule sets are YAML (``version: 1``), validated strictly: unknown keys, wrong types, unknown
actions, verbs or scopes, bad rule ids, duplicate ids and duplicate YAML keys are
:class:`~casemate.errors.PolicyError` naming the location.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase
from typing import ClassVar, Final

from casemate.core.policyfile import YamlDocument
from casemate.core.rulescope import (
    AppliesTo,
    RuleAction,
    ScopedRule,
    matches_any,
    merge_by_id,
    walk_order,
)
from casemate.errors import InvalidInput, PolicyError
from casemate.kubeproxy.classify import READ_VERBS, WRITE_VERBS, ApiRequest

__all__ = [
    "CURRENT_VERSION",
    "GRANT_ALL_NAMESPACES",
    "GRANT_NAMESPACE",
    "PREVIEW_DRY_RUN",
    "ApiAction",
    "ApiMatch",
    "ApiNotice",
    "ApiRule",
    "ApiRules",
    "ApiVerdict",
    "AppliesTo",
    "SessionGrant",
    "decide",
    "default_rules",
    "request_scope",
]

CURRENT_VERSION: Final = 1
GRANT_NAMESPACE: Final = "grant.namespace"
GRANT_ALL_NAMESPACES: Final = "grant.all-namespaces"
PREVIEW_DRY_RUN: Final = "preview.dry-run-only"

_VERB_ALIASES: Final[Mapping[str, frozenset[str]]] = {
    "read": READ_VERBS,
    "write": WRITE_VERBS,
}
_KNOWN_VERBS: Final = frozenset(
    {*READ_VERBS, *WRITE_VERBS, "proxy", "head", "post", "put", "options", "*", *_VERB_ALIASES}
)
SCOPES: Final = ("namespaced", "all-namespaces", "cluster", "non-resource")


class ApiAction(RuleAction):
    """In order of severity (see :class:`~casemate.core.rulescope.RuleAction`)."""

    ALLOW = "allow"
    WARN = "warn"
    REVIEW = "review"
    DENY = "deny"


# The grant --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionGrant:
    """What one session may reach: who (``user``, ``groups``), on which cluster with which
    system account, in which namespaces (globs; ``"*"`` is every namespace and also allows
    all-namespaces requests), until when (timezone-aware). ``dry_run_only`` marks the
    credential of review previews: nothing it sends may change the cluster (see
    :func:`decide`)."""

    user: str
    groups: frozenset[str]
    cluster: str
    account: str
    namespaces: tuple[str, ...]
    expires_at: datetime
    dry_run_only: bool = False

    def __post_init__(self) -> None:
        if not self.user:
            raise InvalidInput("a session grant needs a user")
        if self.expires_at.tzinfo is None:
            raise InvalidInput("a session grant's expiry must be timezone-aware")
        if any(not ns for ns in self.namespaces):
            raise InvalidInput("a session grant's namespaces must not be empty strings")
        object.__setattr__(self, "groups", frozenset(self.groups))
        object.__setattr__(self, "namespaces", tuple(self.namespaces))

    @property
    def all_namespaces(self) -> bool:
        return "*" in self.namespaces

    def covers(self, namespace: str) -> bool:
        return any(fnmatchcase(namespace, pattern) for pattern in self.namespaces)


# Rules ------------------------------------------------------------------------------------------


def request_scope(request: ApiRequest) -> str:
    """``namespaced``, ``all-namespaces``, ``cluster`` or ``non-resource``."""
    if not request.is_resource:
        return "non-resource"
    if request.is_cluster_scoped_guess:
        return "cluster"
    if request.namespace:
        return "namespaced"
    return "all-namespaces"


@dataclass(frozen=True)
class ApiMatch:
    """What a rule matches; unset (empty/None) conditions do not constrain."""

    verbs: tuple[str, ...] = ()
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    dry_run: bool | None = None
    label_selectors: tuple[str, ...] = ()
    secret_types: tuple[str, ...] = ()
    pod_risks: tuple[str, ...] = ()
    role_refs: tuple[str, ...] = ()
    role_verbs: tuple[str, ...] = ()
    replicas: tuple[str, ...] = ()
    _verbs: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expanded: set[str] = set()
        for verb in self.verbs:
            expanded |= _VERB_ALIASES.get(verb, frozenset({verb}))
        object.__setattr__(self, "_verbs", frozenset(expanded))

    def matches(self, request: ApiRequest, *, every: bool) -> bool:
        """Whether ``request`` meets every condition; ``every`` selects the strict (allow)
        semantics for names and namespaces (see the module docstring)."""
        if self._verbs and "*" not in self._verbs and request.verb not in self._verbs:
            return False
        if self.scopes and request_scope(request) not in self.scopes:
            return False
        if self.paths and not matches_any([request.path], self.paths):
            return False
        if self.dry_run is not None and request.dry_run != self.dry_run:
            return False
        if self.api_groups or self.resources:
            if not request.is_resource:
                return False
            if self.api_groups and not matches_any([request.api_group], self.api_groups):
                return False
            if self.resources and not matches_any([request.resource_path], self.resources):
                return False
        if self.names:
            if request.name:
                if not matches_any([request.name], self.names):
                    return False
            elif every or not request.is_resource:
                return False
        if self.namespaces:
            if request.namespace:
                if not matches_any([request.namespace], self.namespaces):
                    return False
            elif every or request_scope(request) != "all-namespaces":
                return False
        if self.label_selectors:
            terms = {t.strip() for t in (request.param("labelSelector") or "").split(",")}
            if not all(matches_any(terms, [pattern]) for pattern in self.label_selectors):
                return False
        return self._body_matches(request, every=every)

    def _body_matches(self, request: ApiRequest, *, every: bool) -> bool:
        conditions = (
            (self.secret_types, "secret_types"),
            (self.pod_risks, "pod_risks"),
            (self.role_refs, "role_refs"),
            (self.role_verbs, "role_verbs"),
            (self.replicas, "replicas"),
        )
        if not any(patterns for patterns, _ in conditions):
            return True
        facts = request.body
        if facts is None:
            if request.verb not in ("create", "update", "patch"):
                return False  # no body that could set anything
            return not every  # a write whose body was not looked at: assume the worst
        if not facts.readable:
            # an unreadable body may set anything: deny/review/warn rules assume it does
            return not every
        for patterns, name in conditions:
            if not patterns:
                continue
            values: frozenset[str] = (
                frozenset(str(n) for n in facts.replicas)
                if name == "replicas"
                else getattr(facts, name)
            )
            unknown = {"?", "?/?", "-1", "unreadable"} & values
            if unknown and not every:
                continue
            if not matches_any(values - unknown, patterns):
                return False
        return True


@dataclass(frozen=True)
class ApiRule(ScopedRule[ApiAction, ApiMatch]):
    """An API rule (fields and scope: :class:`~casemate.core.rulescope.ScopedRule`)."""

    match: ApiMatch = ApiMatch()


@dataclass(frozen=True)
class ApiNotice:
    rule: str
    reason: str


@dataclass(frozen=True)
class ApiVerdict:
    action: ApiAction
    reason: str
    rule: str | None
    warnings: tuple[ApiNotice, ...] = ()

    @property
    def allowed(self) -> bool:
        """Whether the request may be forwarded now (allow, or allow with warnings)."""
        return self.action in (ApiAction.ALLOW, ApiAction.WARN)


@dataclass(frozen=True)
class ApiRules(YamlDocument):
    """An ordered rule set with a default action (deny unless said otherwise). Its YAML form:
    :mod:`casemate.kubeproxy.rulefile`."""

    _yaml_codec: ClassVar[str] = "casemate.kubeproxy.rulefile"
    _yaml_source: ClassVar[str] = "<api rules>"

    rules: tuple[ApiRule, ...] = ()
    default_action: ApiAction = ApiAction.DENY
    version: int = CURRENT_VERSION
    _ordered: tuple[ApiRule, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise PolicyError(f"duplicate rule id {rule.id!r}")
            seen.add(rule.id)
            _validate_match(rule.match, f"rule {rule.id}: match")
        if self.default_action == ApiAction.WARN:
            raise PolicyError("default_action: warn is not terminal; use allow or deny")
        object.__setattr__(self, "_ordered", walk_order(self.rules))

    @property
    def ordered(self) -> tuple[ApiRule, ...]:
        """The enabled rules in evaluation order."""
        return self._ordered

    def merged(self, other: ApiRules) -> ApiRules:
        """This set's rules followed by ``other``'s; a rule of ``other`` with an id already
        present replaces it (e.g. to disable a default rule); ``other``'s default is kept."""
        return ApiRules(
            rules=merge_by_id(self.rules, other.rules), default_action=other.default_action
        )


# Deciding ---------------------------------------------------------------------------------------


def decide(request: ApiRequest, grant: SessionGrant, rules: ApiRules | None = None) -> ApiVerdict:
    """Decide one request for one session; ``rules`` defaults to :func:`default_rules`."""
    rules = default_rules() if rules is None else rules
    if request.is_resource and request.namespace and not grant.covers(request.namespace):
        return ApiVerdict(
            ApiAction.DENY,
            f"namespace {request.namespace!r} is not in your grant ({_namespaces_text(grant)})",
            GRANT_NAMESPACE,
        )
    if request_scope(request) == "all-namespaces" and not grant.all_namespaces:
        return ApiVerdict(
            ApiAction.DENY,
            f"requests across all namespaces are not in your grant ({_namespaces_text(grant)});"
            " name a namespace with -n",
            GRANT_ALL_NAMESPACES,
        )
    if grant.dry_run_only and _changes_anything(request):
        return ApiVerdict(
            ApiAction.DENY,
            "this is a review preview's credential: it may only read and send dry runs "
            "(dryRun=All)",
            PREVIEW_DRY_RUN,
        )
    verdict = _walk(request, grant, rules)
    if grant.dry_run_only and verdict.action == ApiAction.REVIEW:
        if request.is_write:  # a dry run (checked above): it shows what review is about
            return ApiVerdict(
                ApiAction.ALLOW,
                f"a review preview's dry run: {verdict.reason}",
                verdict.rule,
                verdict.warnings,
            )
        return ApiVerdict(
            ApiAction.DENY,
            f"{verdict.reason} (a review preview never asks for a review)",
            verdict.rule,
            verdict.warnings,
        )
    return verdict


def _changes_anything(request: ApiRequest) -> bool:
    """Whether a request could change the cluster: a write that is not ``dryRun=All``, a
    connection into a pod or node (exec, attach, port-forward, proxy), or a non-resource
    request other than GET/HEAD."""
    if not request.is_resource:
        return request.method not in ("GET", "HEAD")
    if request.connect or request.verb == "proxy":
        return True
    if request.verb in READ_VERBS:
        return request.method not in ("GET", "HEAD")
    return not request.dry_run


def _walk(request: ApiRequest, grant: SessionGrant, rules: ApiRules) -> ApiVerdict:
    warnings: list[ApiNotice] = []
    for rule in rules.ordered:
        if not rule.applies_to.contains(grant):
            continue
        if not rule.match.matches(request, every=rule.action == ApiAction.ALLOW):
            continue
        if rule.action == ApiAction.WARN:
            warnings.append(ApiNotice(rule.id, rule.reason))
            continue
        return ApiVerdict(
            _with_notices(rule.action, warnings), rule.reason, rule.id, tuple(warnings)
        )
    return ApiVerdict(
        _with_notices(rules.default_action, warnings),
        f"no rule allows {request.describe()}; the default is {rules.default_action}",
        None,
        tuple(warnings),
    )


def _with_notices(action: ApiAction, warnings: Sequence[ApiNotice]) -> ApiAction:
    return ApiAction.WARN if action == ApiAction.ALLOW and warnings else action


def _namespaces_text(grant: SessionGrant) -> str:
    if not grant.namespaces:
        return "no namespaces"
    return "namespaces: " + ", ".join(grant.namespaces)


def default_rules() -> ApiRules:
    """The shipped rule set (:data:`casemate.kubeproxy.rulefile.DEFAULT_RULES_YAML`)."""
    from casemate.kubeproxy.rulefile import shipped_rules

    return shipped_rules()


def _validate_match(match: ApiMatch, where: str) -> None:
    for verb in match.verbs:
        if verb not in _KNOWN_VERBS:
            raise PolicyError(f"{where}.verbs: unknown verb {verb!r}")
    for scope in match.scopes:
        if scope not in SCOPES:
            raise PolicyError(f"{where}.scopes: unknown scope {scope!r} (one of {SCOPES})")
