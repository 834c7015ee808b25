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
   * What a create/update/patch body sets (:func:`~casemate.kubeproxy.classify.inspect_body`:
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

The default rule set (:data:`DEFAULT_RULES_YAML`) allows discovery reads, everything inside the
granted namespaces, reads of a few harmless cluster-scoped kinds (namespaces, nodes, classes,
CRDs, API services) and the self-review requests of ``kubectl auth whoami``/``can-i``; it
denies namespace deletion, writes to cluster-scoped RBAC, admission webhooks and policies,
CRDs and CSRs (their approval included), minting service account tokens (TokenRequest, and
Secrets of type ``kubernetes.io/service-account-token``: credentials that would bypass
Casemate), every proxy subresource (``nodes/proxy`` reaches the kubelet), reading Secrets
(only Helm's own release records ``sh.helm.release.v1.*`` and lists with ``owner=helm`` are
allowed: ``helm lookup`` and server dry runs read through the same requests) and workloads of
any kind with pod escape risks; exec, attach, port-forward, ephemeral containers,
delete-collection, scaling or patching replicas to zero, updating a Secret (the answer holds
its data), RoleBindings to anything but the ``view`` ClusterRole and Roles granting
``escalate``, ``bind``, ``impersonate`` or ``*`` need review; namespaced RBAC writes are
warned about. Everything else (other cluster-scoped reads, every other
cluster-scoped write, non-resource URLs beyond discovery) falls to the default: deny. A site
allows more with its own higher-priority rules, for example::

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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from functools import cache
from typing import Any, Final

import yaml

from casemate.core.policyfile import At, StrictLoader
from casemate.errors import InvalidInput, PolicyError
from casemate.kubeproxy.classify import READ_VERBS, WRITE_VERBS, ApiRequest

__all__ = [
    "CURRENT_VERSION",
    "DEFAULT_RULES_YAML",
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


class ApiAction(StrEnum):
    ALLOW = "allow"
    WARN = "warn"
    REVIEW = "review"
    DENY = "deny"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY: Final = {ApiAction.ALLOW: 0, ApiAction.WARN: 1, ApiAction.REVIEW: 2, ApiAction.DENY: 3}


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


def _any(values: Iterable[str], patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(value, pattern) for value in values for pattern in patterns)


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
        if self.paths and not _any([request.path], self.paths):
            return False
        if self.dry_run is not None and request.dry_run != self.dry_run:
            return False
        if self.api_groups or self.resources:
            if not request.is_resource:
                return False
            if self.api_groups and not _any([request.api_group], self.api_groups):
                return False
            if self.resources and not _any([request.resource_path], self.resources):
                return False
        if self.names:
            if request.name:
                if not _any([request.name], self.names):
                    return False
            elif every or not request.is_resource:
                return False
        if self.namespaces:
            if request.namespace:
                if not _any([request.namespace], self.namespaces):
                    return False
            elif every or request_scope(request) != "all-namespaces":
                return False
        if self.label_selectors:
            terms = {t.strip() for t in (request.param("labelSelector") or "").split(",")}
            if not all(_any(terms, [pattern]) for pattern in self.label_selectors):
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
            if not _any(values - unknown, patterns):
                return False
        return True


@dataclass(frozen=True)
class AppliesTo:
    """Who and where a rule applies to (globs); an empty list means all."""

    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()

    def contains(self, grant: SessionGrant) -> bool:
        return (
            (not self.users or _any([grant.user], self.users))
            and (not self.groups or _any(grant.groups, self.groups))
            and (not self.clusters or _any([grant.cluster], self.clusters))
            and (not self.accounts or _any([grant.account], self.accounts))
        )


@dataclass(frozen=True)
class ApiRule:
    id: str
    priority: int
    action: ApiAction
    match: ApiMatch = ApiMatch()
    applies_to: AppliesTo = AppliesTo()
    description: str = ""
    enabled: bool = True

    @property
    def reason(self) -> str:
        return self.description or f"rule {self.id}"


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
class ApiRules:
    """An ordered rule set with a default action (deny unless said otherwise)."""

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
        ordered = sorted(
            (rule for rule in self.rules if rule.enabled),
            key=lambda rule: (-rule.priority, -rule.action.severity),
        )
        object.__setattr__(self, "_ordered", tuple(ordered))

    @property
    def ordered(self) -> tuple[ApiRule, ...]:
        """The enabled rules in evaluation order."""
        return self._ordered

    def merged(self, other: ApiRules) -> ApiRules:
        """This set's rules followed by ``other``'s; a rule of ``other`` with an id already
        present replaces it (e.g. to disable a default rule); ``other``'s default is kept."""
        rules = {rule.id: rule for rule in self.rules}
        for rule in other.rules:
            rules[rule.id] = rule
        return ApiRules(rules=tuple(rules.values()), default_action=other.default_action)

    # Serialization -------------------------------------------------------------------------

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<api rules>") -> ApiRules:
        try:
            data = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - safe subclass
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc.message}") from None
        except yaml.YAMLError as exc:
            raise PolicyError(f"{source}: not valid YAML: {exc}") from None
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<api rules>") -> ApiRules:
        return _read_rules(_migrate(data, source), At(source, ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "default_action": str(self.default_action),
            "rules": [_rule_to_dict(rule) for rule in self.rules],
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


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


# The default rule set ----------------------------------------------------------------------------

DEFAULT_RULES_YAML: Final = """\
# Casemate's default API rules for the Kubernetes API proxy (see casemate.kubeproxy.rules).
# Priorities: 1000 deny, 900 review, 500 warn, 100 what a grant allows at all.
version: 1
default_action: deny
rules:
  # --- what a session may do at all -------------------------------------------------------
  - id: api.discovery
    priority: 100
    action: allow
    description: Discovery, version, OpenAPI and health reads that kubectl and helm need.
    match:
      scopes: [non-resource]
      verbs: [get, head]
      paths: [/api, /api/*, /apis, /apis/*, /version, /openapi/*, /healthz, /livez, /readyz]

  - id: api.namespaced
    priority: 100
    action: allow
    description: Requests inside the namespaces of the grant.
    match:
      scopes: [namespaced, all-namespaces]

  - id: api.cluster-read
    priority: 100
    action: allow
    description: Reading harmless cluster-scoped kinds (namespaces, nodes, classes, CRDs).
    match:
      scopes: [cluster]
      verbs: [read]
      resources:
        - namespaces
        - nodes
        - storageclasses
        - ingressclasses
        - priorityclasses
        - runtimeclasses
        - csidrivers
        - customresourcedefinitions
        - apiservices

  - id: api.self-review
    priority: 100
    action: allow
    description: Asking the cluster who you are and what you may do (kubectl auth whoami, can-i).
    match:
      verbs: [create]
      api_groups: [authentication.k8s.io, authorization.k8s.io]
      resources: [selfsubjectreviews, selfsubjectaccessreviews, selfsubjectrulesreviews]

  # --- deny -------------------------------------------------------------------------------
  - id: api.delete-namespace
    priority: 1000
    action: deny
    description: Deleting a namespace deletes everything in it.
    match:
      verbs: [delete, deletecollection]
      api_groups: [""]
      resources: [namespaces]

  - id: api.cluster-rbac-write
    priority: 1000
    action: deny
    description: Writing cluster-wide RBAC (ClusterRoles, ClusterRoleBindings) can grant anything.
    match:
      verbs: [write]
      api_groups: [rbac.authorization.k8s.io]
      resources: [clusterroles, clusterrolebindings]

  - id: api.admission-write
    priority: 1000
    action: deny
    description: Admission webhooks and policies see or change every request of the cluster.
    match:
      verbs: [write]
      api_groups: [admissionregistration.k8s.io]

  - id: api.crd-write
    priority: 1000
    action: deny
    description: Changing a CustomResourceDefinition changes or deletes every resource of it.
    match:
      verbs: [write]
      api_groups: [apiextensions.k8s.io]

  - id: api.csr-write
    priority: 1000
    action: deny
    description: Certificate signing requests mint cluster credentials.
    match:
      verbs: [write]
      api_groups: [certificates.k8s.io]

  - id: api.serviceaccount-token
    priority: 1000
    action: deny
    description: Minting a service account token gives a credential that bypasses Casemate.
    match:
      resources: [serviceaccounts/token]

  - id: api.secret-read
    priority: 1000
    action: deny
    description: >-
      Secret data is never returned (only Helm's own release records); server dry runs,
      helm lookup and server-side rendering read through the same requests.
    match:
      verbs: [read]
      api_groups: [""]
      resources: [secrets]

  - id: api.secret-token-type
    priority: 1100
    action: deny
    description: >-
      A Secret of type kubernetes.io/service-account-token mints a token that works outside
      Casemate.
    match:
      verbs: [create, update, patch]
      api_groups: [""]
      resources: [secrets]
      secret_types: [kubernetes.io/service-account-token]

  - id: api.pod-escape
    priority: 1000
    action: deny
    description: >-
      Privileged containers, host namespaces, hostPath volumes, added capabilities, privilege
      escalation and host ports let a workload break out to its node.
    match:
      verbs: [create, update, patch]
      resources:
        - pods
        - pods/ephemeralcontainers
        - podtemplates
        - deployments
        - replicasets
        - statefulsets
        - daemonsets
        - replicationcontrollers
        - jobs
        - cronjobs
      pod_risks: ["*"]  # every risk, "unreadable" included

  - id: api.proxy-subresource
    priority: 1000
    action: deny
    description: Proxy subresources reach kubelets, pods and services past the API's rules.
    match:
      resources: ["*/proxy"]

  - id: api.proxy-verb
    priority: 1000
    action: deny
    description: Proxy subresources reach kubelets, pods and services past the API's rules.
    match:
      verbs: [proxy]

  # --- review -----------------------------------------------------------------------------
  - id: api.exec
    priority: 900
    action: review
    description: exec, attach and port-forward give interactive or network access into pods.
    match:
      resources: [pods/exec, pods/attach, pods/portforward]

  - id: api.ephemeral-containers
    priority: 900
    action: review
    description: Ephemeral containers (kubectl debug) start new processes next to a workload.
    match:
      verbs: [write]
      resources: [pods/ephemeralcontainers]

  - id: api.delete-collection
    priority: 900
    action: review
    description: Deleting a whole collection can remove far more than intended.
    match:
      verbs: [deletecollection]

  - id: api.rolebinding
    priority: 900
    action: review
    description: >-
      A RoleBinding to anything but the view ClusterRole can hand out escalate, bind,
      impersonate or every verb (to a service account whose token works outside Casemate).
    match:
      verbs: [create, update, patch]
      api_groups: [rbac.authorization.k8s.io]
      resources: [rolebindings]

  - id: api.powerful-role
    priority: 900
    action: review
    description: A Role granting escalate, bind, impersonate or every verb can grant anything.
    match:
      verbs: [create, update, patch]
      api_groups: [rbac.authorization.k8s.io]
      resources: [roles, clusterroles]
      role_verbs: [escalate, bind, impersonate, "[*]"]

  - id: api.scale-to-zero
    priority: 900
    action: review
    description: Scaling a workload to zero replicas stops it.
    match:
      verbs: [update, patch]
      api_groups: [apps, ""]
      resources:
        - deployments
        - deployments/scale
        - statefulsets
        - statefulsets/scale
        - replicasets
        - replicasets/scale
        - replicationcontrollers
        - replicationcontrollers/scale
      replicas: ["0"]

  - id: api.secret-update
    priority: 900
    action: review
    description: >-
      Updating or patching a Secret answers with the whole Secret, its data included.
    match:
      verbs: [update, patch]
      api_groups: [""]
      resources: [secrets]

  # --- allowed exceptions to the rules above ----------------------------------------------
  - id: api.rolebinding-view
    priority: 950
    action: allow
    description: Binding the read-only view ClusterRole.
    match:
      verbs: [create, update]
      api_groups: [rbac.authorization.k8s.io]
      resources: [rolebindings]
      role_refs: [ClusterRole/view]

  - id: api.helm-release-secrets
    priority: 1010
    action: allow
    description: Helm's own release records (Secrets sh.helm.release.v1.NAME.vN, owner=helm).
    match:
      verbs: [get, create, update, patch, delete]
      api_groups: [""]
      resources: [secrets]
      names: [sh.helm.release.v1.*]

  - id: api.helm-release-secret-list
    priority: 1010
    action: allow
    description: Helm listing its own release records (label selector owner=helm).
    match:
      verbs: [list, watch]
      api_groups: [""]
      resources: [secrets]
      label_selectors: [owner=helm]

  # --- warn -------------------------------------------------------------------------------
  - id: api.namespaced-rbac-write
    priority: 500
    action: warn
    description: Changing Roles or RoleBindings changes who may do what in the namespace.
    match:
      verbs: [write]
      api_groups: [rbac.authorization.k8s.io]
      resources: [roles, rolebindings]
"""


@cache
def default_rules() -> ApiRules:
    """The shipped rule set (:data:`DEFAULT_RULES_YAML`)."""
    return ApiRules.from_yaml(DEFAULT_RULES_YAML, source="casemate default API rules")


# Validation and YAML -----------------------------------------------------------------------------

_RULE_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _valid_rule_id(rule_id: str) -> bool:
    return bool(rule_id) and rule_id[0].isalnum() and set(rule_id) <= _RULE_ID_CHARS


def _validate_match(match: ApiMatch, where: str) -> None:
    for verb in match.verbs:
        if verb not in _KNOWN_VERBS:
            raise PolicyError(f"{where}.verbs: unknown verb {verb!r}")
    for scope in match.scopes:
        if scope not in SCOPES:
            raise PolicyError(f"{where}.scopes: unknown scope {scope!r} (one of {SCOPES})")


def _mapping(
    value: object, at: At, allowed: Iterable[str], required: Iterable[str] = ()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise at.error("expected a mapping")
    allowed_set = set(allowed)
    for key in value:
        if not isinstance(key, str):
            raise at.error(f"keys must be strings, not {key!r}")
        if key not in allowed_set:
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


def _action(value: object, at: At) -> ApiAction:
    text = _str(value, at)
    try:
        return ApiAction(text)
    except ValueError:
        raise at.error(
            f"unknown action {text!r} (one of {', '.join(a.value for a in ApiAction)})"
        ) from None


_MATCH_KEYS: Final = (
    "verbs",
    "api_groups",
    "resources",
    "scopes",
    "names",
    "namespaces",
    "paths",
    "dry_run",
    "label_selectors",
    "secret_types",
    "pod_risks",
    "role_refs",
    "role_verbs",
    "replicas",
)
_LIST_KEYS: Final = tuple(key for key in _MATCH_KEYS if key != "dry_run")
_RULE_KEYS: Final = ("id", "priority", "action", "match", "applies_to", "description", "enabled")
_APPLIES_KEYS: Final = ("users", "groups", "clusters", "accounts")


def _read_rules(data: dict[str, Any], at: At) -> ApiRules:
    body = _mapping(data, at, ("version", "default_action", "rules"), ("version",))
    raw_rules = body.get("rules", [])
    if raw_rules is None:
        raw_rules = []
    if not isinstance(raw_rules, list):
        raise (at / "rules").error("expected a list of rules")
    rules: list[ApiRule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw_rules):
        rule = _read_rule(item, at / "rules" / index)
        if rule.id in seen:
            raise (at / "rules" / index / "id").error(f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        rules.append(rule)
    default = _action(body.get("default_action", "deny"), at / "default_action")
    if default == ApiAction.WARN:
        raise (at / "default_action").error("warn is not terminal; use allow, review or deny")
    return ApiRules(rules=tuple(rules), default_action=default)


def _read_rule(data: object, at: At) -> ApiRule:
    body = _mapping(data, at, _RULE_KEYS, ("id", "priority", "action"))
    rule_id = _str(body["id"], at / "id")
    if not _valid_rule_id(rule_id):
        raise (at / "id").error(f"invalid rule id {rule_id!r} (lowercase, digits, . _ -)")
    applies = _mapping(body.get("applies_to") or {}, at / "applies_to", _APPLIES_KEYS)
    enabled = _opt_bool(body.get("enabled", True), at / "enabled")
    return ApiRule(
        id=rule_id,
        priority=_int(body["priority"], at / "priority"),
        action=_action(body["action"], at / "action"),
        match=_read_match(body.get("match") or {}, at / "match"),
        applies_to=AppliesTo(
            **{key: _str_list(applies.get(key), at / "applies_to" / key) for key in _APPLIES_KEYS}
        ),
        description=_str(body.get("description", ""), at / "description"),
        enabled=True if enabled is None else enabled,
    )


def _read_match(data: object, at: At) -> ApiMatch:
    body = _mapping(data, at, _MATCH_KEYS)
    lists = {key: _str_list(body.get(key), at / key) for key in _LIST_KEYS}
    for index, verb in enumerate(lists["verbs"]):
        if verb not in _KNOWN_VERBS:
            raise (at / "verbs" / index).error(
                f"unknown verb {verb!r} (one of {', '.join(sorted(_KNOWN_VERBS))})"
            )
    for index, scope in enumerate(lists["scopes"]):
        if scope not in SCOPES:
            raise (at / "scopes" / index).error(
                f"unknown scope {scope!r} (one of {', '.join(SCOPES)})"
            )
    return ApiMatch(**lists, dry_run=_opt_bool(body.get("dry_run"), at / "dry_run"))


def _rule_to_dict(rule: ApiRule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rule.id, "priority": rule.priority, "action": str(rule.action)}
    if rule.description:
        out["description"] = rule.description
    if not rule.enabled:
        out["enabled"] = False
    applies = {
        key: list(getattr(rule.applies_to, key))
        for key in _APPLIES_KEYS
        if getattr(rule.applies_to, key)
    }
    if applies:
        out["applies_to"] = applies
    match: dict[str, Any] = {}
    for key in _MATCH_KEYS:
        value = getattr(rule.match, key)
        if isinstance(value, tuple):
            if value:
                match[key] = list(value)
        elif value is not None:
            match[key] = value
    out["match"] = match
    return out


# MIGRATIONS[n] turns a version-n document into a version-(n+1) one; none yet.
Migration = Callable[[dict[str, Any]], dict[str, Any]]
MIGRATIONS: dict[int, Migration] = {}


def _migrate(data: object, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a rule set must be a mapping")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise PolicyError(f"{source}: version: expected an integer (current: {CURRENT_VERSION})")
    if version > CURRENT_VERSION:
        raise PolicyError(
            f"{source}: version: {version} is newer than this Casemate understands "
            f"({CURRENT_VERSION})"
        )
    if version < 1:
        raise PolicyError(f"{source}: version: {version} is not a rule set version")
    document = dict(data)
    while version < CURRENT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise PolicyError(f"{source}: version: no migration from version {version}")
        document = step(document)
        version += 1
        document["version"] = version
    return document
