"""HTTP method + request target → :class:`ApiRequest`, exactly as kube-apiserver sees it.

This is a pure port of the apiserver's ``RequestInfoFactory.NewRequestInfo``
(``k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``, Kubernetes 1.34), the function
whose result RBAC authorizes, preceded by a strict gate on the request target.

How a path becomes a request (as in the apiserver)
--------------------------------------------------
* The path is split on ``/`` after trimming slashes. Fewer than three segments, or a first
  segment other than ``api``/``apis``, is a *non-resource* request (``/version``, ``/apis``,
  ``/api/v1``, ``/openapi/v2``, ``/healthz``): its verb is the lower-case HTTP method.
* ``/api/VERSION/…`` (core group) and ``/apis/GROUP/VERSION/…``; ``/apis/GROUP/VERSION`` alone
  is still discovery (non-resource).
* A leading ``watch`` or ``proxy`` segment after the version is the verb (the deprecated
  verb-via-path forms); otherwise POST→create, GET/HEAD→get, PUT→update, PATCH→patch,
  DELETE→delete.
* ``namespaces/NS/…`` sets the namespace; what follows is ``RESOURCE/NAME/SUBRESOURCE`` unless
  it is a namespace subresource (``status``, ``finalize``), in which case the request is on the
  namespace object itself (``namespaces/NS/status``). ``namespaces/NS`` is the namespace object:
  resource ``namespaces``, name ``NS`` *and* namespace ``NS``.
* A ``get`` without a name is ``watch`` if the first ``watch`` query value is anything but
  ``0``/``false`` (an empty value counts as true, like Go's bool conversion), else ``list``; an
  exact ``metadata.name`` field selector then supplies the name. A ``delete`` without a name is
  ``deletecollection``.
* The ``proxy`` path verb takes no subresource (everything after the name is the proxied
  path).

What is refused (:class:`RequestRefused`, answered 400 before anything is decided)
----------------------------------------------------------------------------------
The classification is only worth something if the apiserver resolves the same path. Go
decodes percent-escapes before splitting (``%2F`` would become a path separator for it but not
for a naive parser), Go's ``ServeMux``/go-restful clean or redirect dot segments and doubled
slashes, and Go's query parser silently drops pairs with ``;`` or bad escapes. So:

* targets that are not origin-form (``http://…``, ``*``), longer than :data:`MAX_TARGET`, or
  containing characters outside RFC 3986 ``pchar``/``/``/``?`` (spaces, ``\\``, ``#``,
  controls, non-ASCII);
* empty segments (``//``, a trailing ``/`` except on ``/`` itself) and ``.``/``..`` segments;
* percent-escapes that are malformed, or that encode ``/``, ``\\``, ``%``, ``.``, an unreserved
  character (which a canonical client never escapes), a control character or invalid UTF-8;
* in the query: ``;``, malformed escapes, and a repeated parameter other than exec's
  ``command`` and port-forward's ``ports`` (the apiserver would take the first, a policy
  might read another);
* methods other than GET, HEAD, POST, PUT, PATCH and DELETE.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import yaml

from casemate.errors import InvalidInput
from casemate.kubeproxy.redact import pb_fields
from casemate.risks.pods import WORKLOAD_RESOURCES, patch_risks

__all__ = [
    "CLUSTER_SCOPED",
    "CONNECT_SUBRESOURCES",
    "MAX_TARGET",
    "METHODS",
    "READ_VERBS",
    "WRITE_VERBS",
    "ApiRequest",
    "BodyFacts",
    "RequestRefused",
    "classify",
    "inspect_body",
    "with_body",
]

MAX_TARGET: Final = 8192
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
READ_VERBS: Final = frozenset({"get", "list", "watch"})
WRITE_VERBS: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
#: Subresources that open a connection into a pod, node or service rather than read or write
#: an object: exec, attach, port-forward and the proxies.
CONNECT_SUBRESOURCES: Final = frozenset({"exec", "attach", "portforward", "proxy"})

_API_PREFIXES: Final = frozenset({"api", "apis"})
_GROUPLESS_PREFIXES: Final = frozenset({"api"})
_SPECIAL_VERBS: Final = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_NO_SUBRESOURCES: Final = frozenset({"proxy"})
_NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})
_REPEATABLE_PARAMS: Final = frozenset({"command", "ports"})
_METHOD_VERBS: Final = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

#: Built-in cluster-scoped resources (Kubernetes 1.34), by API group. Anything else requested
#: without a namespace is guessed cluster-scoped too unless it is a known namespaced resource.
CLUSTER_SCOPED: Final[Mapping[str, frozenset[str]]] = {
    "": frozenset({"componentstatuses", "namespaces", "nodes", "persistentvolumes"}),
    "admissionregistration.k8s.io": frozenset(
        {
            "mutatingwebhookconfigurations",
            "validatingwebhookconfigurations",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
        }
    ),
    "apiextensions.k8s.io": frozenset({"customresourcedefinitions"}),
    "apiregistration.k8s.io": frozenset({"apiservices"}),
    "authentication.k8s.io": frozenset({"selfsubjectreviews", "tokenreviews"}),
    "authorization.k8s.io": frozenset(
        {"selfsubjectaccessreviews", "selfsubjectrulesreviews", "subjectaccessreviews"}
    ),
    "certificates.k8s.io": frozenset({"certificatesigningrequests", "clustertrustbundles"}),
    "flowcontrol.apiserver.k8s.io": frozenset({"flowschemas", "prioritylevelconfigurations"}),
    "networking.k8s.io": frozenset({"ingressclasses", "ipaddresses", "servicecidrs"}),
    "node.k8s.io": frozenset({"runtimeclasses"}),
    "rbac.authorization.k8s.io": frozenset({"clusterroles", "clusterrolebindings"}),
    "resource.k8s.io": frozenset({"deviceclasses", "resourceslices"}),
    "scheduling.k8s.io": frozenset({"priorityclasses"}),
    "storage.k8s.io": frozenset(
        {"csidrivers", "csinodes", "storageclasses", "volumeattachments", "volumeattributesclasses"}
    ),
    "storagemigration.k8s.io": frozenset({"storageversionmigrations"}),
    "internal.apiserver.k8s.io": frozenset({"storageversions"}),
}

_NAMESPACED: Final[Mapping[str, frozenset[str]]] = {
    "": frozenset(
        {
            "bindings", "configmaps", "endpoints", "events", "limitranges",
            "persistentvolumeclaims", "pods", "podtemplates", "replicationcontrollers",
            "resourcequotas", "secrets", "serviceaccounts", "services",
        }
    ),
    "apps": frozenset(
        {"controllerrevisions", "daemonsets", "deployments", "replicasets", "statefulsets"}
    ),
    "authorization.k8s.io": frozenset({"localsubjectaccessreviews"}),
    "autoscaling": frozenset({"horizontalpodautoscalers"}),
    "batch": frozenset({"cronjobs", "jobs"}),
    "coordination.k8s.io": frozenset({"leases", "leasecandidates"}),
    "discovery.k8s.io": frozenset({"endpointslices"}),
    "events.k8s.io": frozenset({"events"}),
    "networking.k8s.io": frozenset({"ingresses", "networkpolicies"}),
    "policy": frozenset({"poddisruptionbudgets"}),
    "rbac.authorization.k8s.io": frozenset({"rolebindings", "roles"}),
    "resource.k8s.io": frozenset({"resourceclaims", "resourceclaimtemplates"}),
    "storage.k8s.io": frozenset({"csistoragecapacities"}),
}  # fmt: skip


class RequestRefused(InvalidInput):
    """The request target is ambiguous or malformed; it is answered 400 and never forwarded."""

    status = 400
    title = "Bad request"


@dataclass(frozen=True)
class ApiRequest:
    """One HTTP request as the apiserver's authorizer sees it (see the module docstring).

    ``verb`` is the Kubernetes verb for resource requests (get, list, watch, create, update,
    patch, delete, deletecollection, or the path verbs watch/proxy) and the lower-case HTTP
    method for non-resource requests. ``connect`` names the connect subresource (``exec``,
    ``attach``, ``portforward``, ``proxy``) when the request opens a connection into a pod,
    node or service. ``query`` holds the decoded parameters in order.
    """

    method: str
    path: str
    verb: str
    is_resource: bool
    api_prefix: str = ""
    api_group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    raw_query: str = ""
    verb_via_path: bool = False
    name_from_selector: bool = False
    body: BodyFacts | None = None
    #: A DELETE's ``DeleteOptions.dryRun == ["All"]`` read from its body. The apiserver reads
    #: a DELETE's options from its body when it has one and then ignores the query, so
    #: ``?dryRun=All`` with a body that says otherwise is a real delete. None: no body.
    delete_body_dry_run: bool | None = None
    _params: Mapping[str, tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        params: dict[str, list[str]] = {}
        for key, value in self.query:
            params.setdefault(key, []).append(value)
        object.__setattr__(self, "_params", {k: tuple(v) for k, v in params.items()})

    # -- derived facts

    def param(self, name: str) -> str | None:
        """The (first) value of query parameter ``name``, None if absent."""
        values = self._params.get(name)
        return values[0] if values else None

    def params(self, name: str) -> tuple[str, ...]:
        return self._params.get(name, ())

    @property
    def target(self) -> str:
        """The request target to forward: the checked path and the query exactly as sent."""
        return f"{self.path}?{self.raw_query}" if self.raw_query else self.path

    @property
    def is_write(self) -> bool:
        return self.is_resource and self.verb in WRITE_VERBS and not self.connect

    @property
    def is_read(self) -> bool:
        return self.is_resource and self.verb in READ_VERBS and not self.connect

    @property
    def connect(self) -> str:
        if not self.is_resource:
            return ""
        if self.verb == "proxy":
            return "proxy"
        return self.subresource if self.subresource in CONNECT_SUBRESOURCES else ""

    @property
    def dry_run(self) -> bool:
        """Whether the apiserver will not persist this write (``dryRun=All``; for a DELETE
        with a body, what the body's ``DeleteOptions`` say: the apiserver ignores the query
        then)."""
        if self.delete_body_dry_run is not None:
            return self.delete_body_dry_run
        return self.param("dryRun") == "All"

    @property
    def is_cluster_scoped_guess(self) -> bool:
        """Whether the object(s) addressed are cluster-scoped: a known cluster-scoped
        resource, or an unknown resource requested without a namespace (custom resources
        cannot be told apart from the path; rules must treat both the same)."""
        if not self.is_resource:
            return False
        if self.resource in CLUSTER_SCOPED.get(self.api_group, frozenset()):
            return True
        if self.namespace:
            return False
        return self.resource not in _NAMESPACED.get(self.api_group, frozenset())

    @property
    def all_namespaces(self) -> bool:
        """A namespaced resource requested without a namespace (``kubectl get pods -A``)."""
        return self.is_resource and not self.namespace and not self.is_cluster_scoped_guess

    @property
    def resource_path(self) -> str:
        """``resource`` or ``resource/subresource``, as RBAC names it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource

    def describe(self) -> str:
        """A short human summary: ``delete namespaces/a``, ``list pods -n team-a``."""
        if not self.is_resource:
            return f"{self.verb} {self.path}"
        what = self.resource_path
        if self.api_group:
            what = f"{what}.{self.api_group}"
        if self.name:
            what = f"{what} {self.name}"
        if self.namespace and self.resource != "namespaces":
            what = f"{what} -n {self.namespace}"
        return f"{self.verb} {what}"


# The target gate ------------------------------------------------------------------------------

_PCHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
_QCHAR = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*")
_ESCAPE = re.compile(r"%(?P<hex>[0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _refuse(message: str) -> RequestRefused:
    return RequestRefused(message)


def _decode_segment(segment: str) -> str:
    """Percent-decode one path segment, refusing escapes a canonical client never produces."""
    if "%" not in segment:
        return segment
    if segment.count("%") != len(_ESCAPE.findall(segment)):
        raise _refuse("malformed percent-escape in the request path")
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(segment):
        raw += segment[pos : m.start()].encode("ascii")
        byte = int(m.group("hex"), 16)
        char = chr(byte)
        if byte < 0x20 or byte == 0x7F or char in _UNRESERVED or char in "/\\%":
            raise _refuse(f"the percent-escape {m.group()} is not allowed in the request path")
        raw.append(byte)
        pos = m.end()
    raw += segment[pos:].encode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("the request path is not valid UTF-8 once decoded") from None


def _split_path(path: str) -> tuple[str, ...]:
    if not path.startswith("/"):
        raise _refuse("the request target must be an absolute path")
    if not _PCHAR.fullmatch(path):
        raise _refuse("the request path contains characters that must be percent-encoded")
    if path == "/":
        return ()
    raw_segments = path[1:].split("/")
    segments: list[str] = []
    for raw in raw_segments:
        if raw == "":
            raise _refuse("empty path segments (// or a trailing /) are not allowed")
        segment = _decode_segment(raw)
        if segment in (".", ".."):
            raise _refuse("dot segments (. and ..) are not allowed in the request path")
        segments.append(segment)
    return tuple(segments)


def _unquote_query(text: str) -> str:
    """Go's ``url.QueryUnescape`` (``+`` is a space), refusing what Go would drop."""
    text = text.replace("+", " ")
    if "%" not in text:
        return text
    if text.count("%") != len(_ESCAPE.findall(text)):
        raise _refuse("malformed percent-escape in the query")
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        raw += text[pos : m.start()].encode("ascii")
        raw.append(int(m.group("hex"), 16))
        pos = m.end()
    raw += text[pos:].encode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse("the query is not valid UTF-8 once decoded") from None


def _parse_query(raw: str) -> tuple[tuple[str, str], ...]:
    if not _QCHAR.fullmatch(raw):
        raise _refuse("the query contains characters that must be percent-encoded")
    if ";" in raw:
        raise _refuse("';' is not allowed in the query")
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in raw.split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        name = _unquote_query(key)
        if not name:
            continue  # Go skips pairs with an empty key
        if name in seen and name not in _REPEATABLE_PARAMS:
            raise _refuse(f"the query parameter {name!r} is given more than once")
        seen.add(name)
        pairs.append((name, _unquote_query(value)))
    return tuple(pairs)


def _go_bool(value: str) -> bool:
    """``Convert_Slice_string_To_bool``: only ``0`` and ``false`` (any case) are false."""
    return not (value == "0" or value.lower() == "false")


def _is_path_segment_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "%" not in name


def _selector_name(selector: str) -> str | None:
    """The value an exact ``metadata.name`` requirement fixes (``=`` or ``==``), if any.

    Field selectors are ``,``-separated ANDed terms with ``\\`` escapes (fields.ParseSelector);
    one exact ``metadata.name`` term is enough for ``RequiresExactMatch``."""
    terms: list[str] = []
    current: list[str] = []
    escaped = False
    for char in selector:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        return None
    terms.append("".join(current))
    for term in terms:
        for op in ("!=", "==", "="):
            left, sep, right = term.partition(op)
            if sep:
                break
        else:
            continue
        if op == "!=" or left.strip() != "metadata.name":
            continue
        value = re.sub(r"\\(.)", r"\1", right)
        return value
    return None


# Classification -------------------------------------------------------------------------------


def classify(method: str, target: str) -> ApiRequest:
    """Classify one request (``target`` is the origin-form request target as sent).

    Raises :class:`RequestRefused` for a method or target the proxy will not forward.
    """
    method = method.upper()
    if method not in METHODS:
        raise RequestRefused(f"the HTTP method {method} is not allowed")
    if len(target) > MAX_TARGET:
        raise RequestRefused(f"the request target is longer than {MAX_TARGET} characters")
    path, question, raw_query = target.partition("?")
    parts = list(_split_path(path))
    query = _parse_query(raw_query) if question else ()
    base = ApiRequest(
        method=method,
        path=path,
        verb=method.lower(),
        is_resource=False,
        query=query,
        raw_query=raw_query,
    )
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return base
    prefix = parts[0]
    current = parts[1:]
    group = ""
    if prefix not in _GROUPLESS_PREFIXES:
        if len(current) < 3:
            return base
        group = current[0]
        current = current[1:]
    version = current[0]
    current = current[1:]

    verb_via_path = False
    if current[0] in _SPECIAL_VERBS:
        if len(current) < 2:
            raise RequestRefused("unable to determine kind and namespace from the request path")
        verb = current[0]
        current = current[1:]
        verb_via_path = True
    else:
        verb = _METHOD_VERBS[method]

    namespace = ""
    if current[0] == "namespaces" and len(current) > 1:
        namespace = current[1]
        if len(current) > 2 and current[2] not in _NAMESPACE_SUBRESOURCES:
            current = current[2:]

    resource = name = subresource = ""
    if len(current) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = current[2]
    if len(current) >= 2:
        name = current[1]
    resource = current[0]

    name_from_selector = False
    if not name and verb == "get":
        watch = [v for k, v in query if k == "watch"]
        verb = "watch" if watch and _go_bool(watch[0]) else "list"
        selectors = [v for k, v in query if k == "fieldSelector"]
        if selectors:
            picked = _selector_name(selectors[0])
            if picked is not None and _is_path_segment_name(picked):
                name = picked
                name_from_selector = True
    if not name and verb == "delete":
        verb = "deletecollection"

    return ApiRequest(
        method=method,
        path=path,
        verb=verb,
        is_resource=True,
        api_prefix=prefix,
        api_group=group,
        version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        parts=tuple(current),
        query=query,
        raw_query=raw_query,
        verb_via_path=verb_via_path,
        name_from_selector=name_from_selector,
    )


# What a write's body holds --------------------------------------------------------------------

#: Resources whose write bodies the rules look into.
SCALABLE_RESOURCES: Final = frozenset(
    {"deployments", "replicasets", "statefulsets", "replicationcontrollers"}
)
_BODY_RESOURCES: Final = frozenset(
    {
        "secrets",
        "roles",
        "clusterroles",
        "rolebindings",
        "clusterrolebindings",
        *WORKLOAD_RESOURCES,
    }
)
_JSON_PATCH: Final = "application/json-patch+json"
_YAML_TYPES: Final = ("application/apply-patch+yaml", "application/yaml")
_JSON_TYPES: Final = (
    "application/json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    _JSON_PATCH,
)


@dataclass(frozen=True)
class BodyFacts:
    """What the body of a write to a sensitive resource would set, as far as it can be read.

    ``readable`` is False when the body could not be decoded (protobuf, bad JSON/YAML,
    duplicate keys): rules then assume the worst (see :mod:`casemate.kubeproxy.rules`).
    ``secret_types`` are the Secret ``type`` values the body sets, ``pod_risks`` the escape
    risks (:mod:`casemate.risks.pods`) of a workload, ``role_refs`` a binding's
    ``Kind/name`` role reference, ``role_verbs`` the verbs a Role or ClusterRole grants,
    ``replicas`` the replica counts set (``spec.replicas``, also through the scale
    subresource and JSON patches)."""

    readable: bool = True
    secret_types: frozenset[str] = frozenset()
    pod_risks: frozenset[str] = frozenset()
    role_refs: frozenset[str] = frozenset()
    role_verbs: frozenset[str] = frozenset()
    replicas: frozenset[int] = frozenset()


UNREADABLE: Final = BodyFacts(readable=False)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


# Kubernetes protobuf (kubectl sends the objects it builds itself this way: create deployment,
# run, create rolebinding, scale, ...). Only the fields the rules look at are decoded, from the
# field numbers of k8s.io/api 1.34's generated.proto; a field that is not repeated but occurs
# twice (Go would merge or take the last one) makes the body unreadable.
_PROTOBUF_MAGIC: Final = b"k8s\x00"
_T = dict[int, tuple[str, str, str]]
_PB_SCHEMA: Final[Mapping[str, _T]] = {
    "Secret": {3: ("type", "str", "")},
    "Pod": {2: ("spec", "msg", "PodSpec")},
    "PodSpec": {
        1: ("volumes", "msgs", "Volume"),
        2: ("containers", "msgs", "Container"),
        20: ("initContainers", "msgs", "Container"),
        34: ("ephemeralContainers", "msgs", "EphemeralContainer"),
        11: ("hostNetwork", "bool", ""),
        12: ("hostPID", "bool", ""),
        13: ("hostIPC", "bool", ""),
    },
    "Container": {
        1: ("name", "str", ""),
        6: ("ports", "msgs", "ContainerPort"),
        15: ("securityContext", "msg", "SecurityContext"),
    },
    "EphemeralContainer": {1: ("", "inline", "Container")},  # EphemeralContainerCommon
    "ContainerPort": {2: ("hostPort", "int", "")},
    "SecurityContext": {
        1: ("capabilities", "msg", "Capabilities"),
        2: ("privileged", "bool", ""),
        7: ("allowPrivilegeEscalation", "bool", ""),
    },
    "Capabilities": {1: ("add", "strs", "")},
    "Volume": {1: ("name", "str", ""), 2: ("", "inline", "VolumeSource")},
    "VolumeSource": {1: ("hostPath", "present", "")},
    "PodTemplateSpec": {2: ("spec", "msg", "PodSpec")},
    "PodTemplate": {2: ("template", "msg", "PodTemplateSpec")},
    "ReplicaSpec": {1: ("replicas", "int", ""), 3: ("template", "msg", "PodTemplateSpec")},
    "Deployment": {2: ("spec", "msg", "ReplicaSpec")},
    "ReplicaSet": {2: ("spec", "msg", "ReplicaSpec")},
    "StatefulSet": {2: ("spec", "msg", "ReplicaSpec")},
    "ReplicationController": {2: ("spec", "msg", "ReplicaSpec")},
    "DaemonSet": {2: ("spec", "msg", "DaemonSetSpec")},
    "DaemonSetSpec": {2: ("template", "msg", "PodTemplateSpec")},
    "Job": {2: ("spec", "msg", "JobSpec")},
    "JobSpec": {6: ("template", "msg", "PodTemplateSpec")},
    "CronJob": {2: ("spec", "msg", "CronJobSpec")},
    "CronJobSpec": {5: ("jobTemplate", "msg", "JobTemplateSpec")},
    "JobTemplateSpec": {2: ("spec", "msg", "JobSpec")},
    "RoleBinding": {3: ("roleRef", "msg", "RoleRef")},
    "ClusterRoleBinding": {3: ("roleRef", "msg", "RoleRef")},
    "RoleRef": {1: ("apiGroup", "str", ""), 2: ("kind", "str", ""), 3: ("name", "str", "")},
    "Role": {2: ("rules", "msgs", "PolicyRule")},
    "ClusterRole": {2: ("rules", "msgs", "PolicyRule")},
    "PolicyRule": {1: ("verbs", "strs", "")},
    "Scale": {2: ("spec", "msg", "ScaleSpec")},
    "ScaleSpec": {1: ("replicas", "int", "")},
}
#: The kinds a protobuf body may carry to each resource the rules look into.
_PB_KINDS: Final[Mapping[str, frozenset[str]]] = {
    "secrets": frozenset({"Secret"}),
    "pods": frozenset({"Pod"}),
    "podtemplates": frozenset({"PodTemplate"}),
    "deployments": frozenset({"Deployment"}),
    "replicasets": frozenset({"ReplicaSet"}),
    "statefulsets": frozenset({"StatefulSet"}),
    "daemonsets": frozenset({"DaemonSet"}),
    "replicationcontrollers": frozenset({"ReplicationController"}),
    "jobs": frozenset({"Job"}),
    "cronjobs": frozenset({"CronJob"}),
    "roles": frozenset({"Role"}),
    "clusterroles": frozenset({"ClusterRole"}),
    "rolebindings": frozenset({"RoleBinding"}),
    "clusterrolebindings": frozenset({"ClusterRoleBinding"}),
}


def _pb_message(buf: bytes, name: str, depth: int = 0) -> dict[str, Any]:
    if depth > 12:
        raise ValueError("protobuf nested too deeply")
    schema = _PB_SCHEMA[name]
    out: dict[str, Any] = {}
    seen: set[int] = set()
    for number, value in pb_fields(buf):
        spec = schema.get(number)
        if spec is None:
            continue
        key, kind, sub = spec
        repeated = kind in ("msgs", "strs")
        if not repeated:
            if number in seen:
                raise ValueError(f"{name}.{key or sub} occurs twice")
            seen.add(number)
        if kind in ("int", "bool"):
            if not isinstance(value, int):
                raise ValueError(f"{name}.{key}: not a varint")
            if kind == "bool":
                out[key] = value != 0
            else:
                out[key] = value - (1 << 64) if value >= 1 << 63 else value
            continue
        if not isinstance(value, bytes):
            raise ValueError(f"{name}.{key or sub}: not length-delimited")
        if kind == "str":
            out[key] = value.decode("utf-8")
        elif kind == "strs":
            out.setdefault(key, []).append(value.decode("utf-8"))
        elif kind == "present":
            out[key] = {}
        elif kind == "msg":
            out[key] = _pb_message(value, sub, depth + 1)
        elif kind == "msgs":
            out.setdefault(key, []).append(_pb_message(value, sub, depth + 1))
        else:  # inline: the embedded message's fields belong to this one
            for inner_key, inner in _pb_message(value, sub, depth + 1).items():
                if inner_key in out:
                    raise ValueError(f"{name}.{inner_key} occurs twice")
                out[inner_key] = inner
    return out


def _decode_protobuf(body: bytes, api: ApiRequest) -> dict[str, Any]:
    """The fields the rules look at of a Kubernetes protobuf body, as JSON would hold them."""
    if not body.startswith(_PROTOBUF_MAGIC):
        raise ValueError("not a Kubernetes protobuf envelope")
    envelope = pb_fields(body[len(_PROTOBUF_MAGIC) :])
    kinds = [v for n, v in envelope if n == 1]
    raws = [v for n, v in envelope if n == 2]
    if len(kinds) != 1 or len(raws) != 1 or not isinstance(raws[0], bytes):
        raise ValueError("a protobuf envelope needs one type and one object")
    if not isinstance(kinds[0], bytes):
        raise ValueError("bad protobuf type")
    kind = ""
    for number, value in pb_fields(kinds[0]):
        if number == 2 and isinstance(value, bytes):
            kind = value.decode("utf-8")
    if any(n == 3 and v for n, v in envelope):
        raise ValueError("an encoded (compressed) protobuf body")
    expected = frozenset({"Scale"}) if api.subresource == "scale" else _PB_KINDS.get(api.resource)
    if api.subresource == "ephemeralcontainers":
        expected = frozenset({"Pod"})
    if expected is None or kind not in expected:
        raise ValueError(f"protobuf kind {kind!r} for {api.resource_path}")
    return {"kind": kind, **_pb_message(raws[0], kind)}


def _decode(body: bytes, content_type: str | None, api: ApiRequest) -> object:
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/vnd.kubernetes.protobuf":
        return _decode_protobuf(body, api)
    text = body.decode("utf-8")
    if media in _YAML_TYPES:
        return yaml.safe_load(text)
    if media in _JSON_TYPES:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    raise ValueError(f"unsupported content type {media}")


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _role_verbs(value: object, path: tuple[str, ...], out: set[str]) -> None:
    if "verbs" in path:
        out.update(_strings(value))
        if isinstance(value, list | dict) and not _strings(value) and value:
            out.add("*")  # a shape the apiserver would refuse; assume the worst
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _role_verbs(item, (*path, str(key)), out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _role_verbs(item, (*path, str(index)), out)


def _facts(api: ApiRequest, doc: object) -> BodyFacts:
    # (path, value) pairs: a JSON patch's operations, or the document at the root
    if isinstance(doc, list):
        pairs: list[tuple[tuple[str, ...], object]] = []
        for op in doc:
            if not isinstance(op, dict) or not isinstance(op.get("path"), str):
                return UNREADABLE
            if op.get("op") in ("add", "replace", "copy", "move"):
                if op.get("op") in ("copy", "move"):
                    return UNREADABLE  # the value comes from elsewhere in the object
                segments = tuple(
                    s.replace("~1", "/").replace("~0", "~") for s in op["path"].split("/")[1:]
                )
                pairs.append((segments, op.get("value")))
        if not pairs:
            return BodyFacts()
    elif isinstance(doc, dict):
        pairs = [((), doc)]
    else:
        return UNREADABLE
    secret_types: set[str] = set()
    risks: set[str] = set()
    role_refs: set[str] = set()
    verbs: set[str] = set()
    replicas: set[int] = set()
    resource = api.resource
    for path, value in pairs:
        if resource == "secrets" and not api.subresource:
            if path == ("type",):
                secret_types.update(_strings(value) or ["?"])
            elif not path and isinstance(value, dict) and "type" in value:
                secret_types.update(_strings(value["type"]) or ["?"])
        if resource in WORKLOAD_RESOURCES:
            risks.update(r.risk for r in patch_risks(value, path))
        if resource in ("roles", "clusterroles"):
            _role_verbs(value, path, verbs)
        if resource in ("rolebindings", "clusterrolebindings"):
            ref = value if path == ("roleRef",) else None
            if not path and isinstance(value, dict):
                ref = value.get("roleRef")
            if isinstance(ref, dict):
                role_refs.add(f"{ref.get('kind', '?')}/{ref.get('name', '?')}")
            elif ref is not None or path[:1] == ("roleRef",):
                role_refs.add("?/?")
        if resource in SCALABLE_RESOURCES:
            if path == ("spec", "replicas"):
                count: object = value
            elif not path and isinstance(value, dict) and isinstance(value.get("spec"), dict):
                count = value["spec"].get("replicas")
            elif path == ("spec",) and isinstance(value, dict):
                count = value.get("replicas")
            else:
                count = None
            if isinstance(count, int) and not isinstance(count, bool):
                replicas.add(count)
            elif count is not None:
                replicas.add(-1)  # not a number the apiserver accepts; judged as unknown
    return BodyFacts(
        secret_types=frozenset(secret_types),
        pod_risks=frozenset(risks),
        role_refs=frozenset(role_refs),
        role_verbs=frozenset(verbs),
        replicas=frozenset(replicas),
    )


def inspect_body(api: ApiRequest, body: bytes, content_type: str | None) -> BodyFacts | None:
    """What a create/update/patch body would set (None for other requests and resources the
    rules do not look into). Pure; never raises."""
    if not api.is_resource or api.verb not in ("create", "update", "patch"):
        return None
    if api.resource not in _BODY_RESOURCES:
        return None
    if api.subresource and not (api.subresource == "scale" or api.resource in WORKLOAD_RESOURCES):
        return None
    try:
        doc = _decode(body, content_type, api)
    except (ValueError, KeyError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return UNREADABLE
    if api.subresource == "scale":
        facts = _facts(replace(api, resource="deployments"), doc)
        if api.verb == "update" and facts.readable and not facts.replicas:
            # ScaleSpec.replicas is a plain int32: a Scale sent whole without it means 0
            facts = replace(facts, replicas=frozenset({0}))
        return facts
    return _facts(api, doc)


def delete_options_dry_run(body: bytes, content_type: str | None, api: ApiRequest) -> bool:
    """Whether a DELETE body's ``DeleteOptions`` ask for ``dryRun: ["All"]``. Anything that
    cannot be read for sure (protobuf, bad JSON, duplicate keys, another shape) is not a dry
    run: the request is judged as the real delete it may be. Pure; never raises."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/vnd.kubernetes.protobuf":
        return False
    try:
        doc = _decode(body, content_type, api)
    except (ValueError, KeyError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("dryRun") == ["All"]


def with_body(api: ApiRequest, body: bytes, content_type: str | None) -> ApiRequest:
    """``api`` with :attr:`ApiRequest.body` filled from the request body (see
    :func:`inspect_body`), and for a DELETE with a body, :attr:`ApiRequest.dry_run` taken
    from the body's options as the apiserver takes it."""
    if api.is_resource and api.method == "DELETE" and body:
        api = replace(api, delete_body_dry_run=delete_options_dry_run(body, content_type, api))
    facts = inspect_body(api, body, content_type)
    return api if facts is None else replace(api, body=facts)
