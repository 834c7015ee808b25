"""Reading and writing API rule sets (YAML, versioned), and the shipped default rules.

A rule set document has a ``version`` (current: :data:`~casemate.kubeproxy.rules.CURRENT_VERSION`);
older versions are migrated step by step (:data:`MIGRATIONS`), newer ones refused. Every field
is validated with its location in the error (``At``). The model and the decision live in
:mod:`casemate.kubeproxy.rules`.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

from casemate.core.policyfields import (
    Migration,
    choice,
    integer,
    mapping,
    migrate_document,
    opt_bool,
    str_list,
    string,
)
from casemate.core.policyfile import At
from casemate.core.rulescope import match_to_dict
from casemate.kubeproxy.rules import (
    _KNOWN_VERBS,
    CURRENT_VERSION,
    SCOPES,
    ApiAction,
    ApiMatch,
    ApiRule,
    ApiRules,
    AppliesTo,
)

__all__ = [
    "DEFAULT_RULES_YAML",
    "MIGRATIONS",
    "document_from_dict",
    "document_to_dict",
    "shipped_rules",
]


def document_from_dict(data: object, *, source: str) -> ApiRules:
    """A rule set from its document (migrated, then validated): :meth:`ApiRules.from_dict`."""
    return _read_rules(_migrate(data, source), At(source, ""))


def document_to_dict(rules: ApiRules) -> dict[str, Any]:
    """The document of a rule set: :meth:`ApiRules.to_dict`."""
    return {
        "version": rules.version,
        "default_action": str(rules.default_action),
        "rules": [_rule_to_dict(rule) for rule in rules.rules],
    }


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
def shipped_rules() -> ApiRules:
    """The shipped rule set (:data:`DEFAULT_RULES_YAML`)."""
    return ApiRules.from_yaml(DEFAULT_RULES_YAML, source="casemate default API rules")


# Validation and YAML -----------------------------------------------------------------------------

_RULE_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")


def _valid_rule_id(rule_id: str) -> bool:
    return bool(rule_id) and rule_id[0].isalnum() and set(rule_id) <= _RULE_ID_CHARS


def _action(value: object, at: At) -> ApiAction:
    return choice(value, at, ApiAction)


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


def _read_rules(data: dict[str, Any], at: At) -> ApiRules:
    body = mapping(data, at, ("version", "default_action", "rules"), ("version",))
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
    body = mapping(data, at, _RULE_KEYS, ("id", "priority", "action"))
    rule_id = string(body["id"], at / "id")
    if not _valid_rule_id(rule_id):
        raise (at / "id").error(f"invalid rule id {rule_id!r} (lowercase, digits, . _ -)")
    enabled = opt_bool(body.get("enabled", True), at / "enabled")
    return ApiRule(
        id=rule_id,
        priority=integer(body["priority"], at / "priority"),
        action=_action(body["action"], at / "action"),
        match=_read_match(body.get("match") or {}, at / "match"),
        applies_to=AppliesTo.read(body.get("applies_to"), at / "applies_to"),
        description=string(body.get("description", ""), at / "description"),
        enabled=True if enabled is None else enabled,
    )


def _read_match(data: object, at: At) -> ApiMatch:
    body = mapping(data, at, _MATCH_KEYS)
    lists = {key: str_list(body.get(key), at / key) for key in _LIST_KEYS}
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
    return ApiMatch(**lists, dry_run=opt_bool(body.get("dry_run"), at / "dry_run"))


def _rule_to_dict(rule: ApiRule) -> dict[str, Any]:
    return {**rule.head_to_dict(), "match": match_to_dict(rule.match, _MATCH_KEYS)}


# MIGRATIONS[n] turns a version-n document into a version-(n+1) one; none yet.
MIGRATIONS: dict[int, Migration] = {}


def _migrate(data: object, source: str) -> dict[str, Any]:
    return migrate_document(
        data,
        source=source,
        current=CURRENT_VERSION,
        migrations=MIGRATIONS,
        noun="rule set",
        oldest=1,
    )
