"""What the body of a write holds, for the API rules: :func:`with_body` reads a create, update
or patch body (JSON, YAML, every patch type, Kubernetes protobuf) into the
:class:`~casemate.kubeproxy.classify.BodyFacts` of its :class:`~casemate.kubeproxy.classify.
ApiRequest` (Secret type, pod escape risks, role references and verbs, replicas), and a
DELETE's ``DeleteOptions`` into its dry-run flag. A body that cannot be read is
:data:`~casemate.kubeproxy.classify.UNREADABLE`: rules then assume the worst. Pure functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

import yaml

from casemate.kubeproxy.classify import UNREADABLE, ApiRequest, BodyFacts
from casemate.kubeproxy.redact import pb_fields
from casemate.risks.pods import WORKLOAD_RESOURCES, patch_risks

__all__ = ["SCALABLE_RESOURCES", "delete_options_dry_run", "inspect_body", "with_body"]


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


class _BodyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases: an alias shares its node, so a few hundred bytes
    of nested aliases ("billion laughs") make a tree whose walk costs minutes of the proxy's
    event loop. A body with one is unreadable (the rules assume the worst); kubectl never
    sends one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("a YAML alias in a request body")
        return super().compose_node(parent, index)


def _decode(body: bytes, content_type: str | None, api: ApiRequest) -> object:
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media == "application/vnd.kubernetes.protobuf":
        return _decode_protobuf(body, api)
    text = body.decode("utf-8")
    if media in _YAML_TYPES:
        return yaml.load(text, Loader=_BodyLoader)  # a safe loader
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
