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

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from casemate.errors import InvalidInput

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
    "UNREADABLE",
    "classify",
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


def _percent_decode(text: str, where: str, *, strict: bool) -> str:
    """Percent-decode ``text`` (of the request path or the query, ``where``) as UTF-8;
    ``strict`` also refuses escapes a canonical client never produces in a path segment
    (controls, unreserved characters, ``/``, ``\\``, ``%``)."""
    if "%" not in text:
        return text
    if text.count("%") != len(_ESCAPE.findall(text)):
        raise _refuse(f"malformed percent-escape in {where}")
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        raw += text[pos : m.start()].encode("ascii")
        byte = int(m.group("hex"), 16)
        if strict:
            char = chr(byte)
            if byte < 0x20 or byte == 0x7F or char in _UNRESERVED or char in "/\\%":
                raise _refuse(f"the percent-escape {m.group()} is not allowed in {where}")
        raw.append(byte)
        pos = m.end()
    raw += text[pos:].encode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _refuse(f"{where} is not valid UTF-8 once decoded") from None


def _decode_segment(segment: str) -> str:
    """Percent-decode one path segment, refusing escapes a canonical client never produces."""
    return _percent_decode(segment, "the request path", strict=True)


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
    return _percent_decode(text.replace("+", " "), "the query", strict=False)


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


# What a write's body sets (read by casemate.kubeproxy.body) -----------------------------------


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
