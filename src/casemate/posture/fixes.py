"""Fixes: the minimal change that clears a finding, where it needs no value only the user knows.

:data:`FIXES` maps a rule to the value its field must take; :func:`patches_for` turns findings
into :class:`Patch` values (pure). :func:`fix_text` applies them to a manifest file's text with
ruamel.yaml's round trip, so comments, key order, quoting and the untouched lines stay as they
were: the findings come from the same parser as the scan (libyaml, YAML 1.1 like kubectl), and
each one is applied to the ruamel document that starts on the same line. Missing parents are
created; a container is addressed by its index.

:func:`default_deny_policies` writes what ``network.namespace-no-policy`` asks for: a
default-deny NetworkPolicy (ingress and egress) for the namespace, DNS egress, and one policy
per Service letting the namespace's pods reach the Service's pods on its target ports.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from casemate.posture.engine import Scanner
from casemate.posture.manifests import LoadProblem, parse_documents
from casemate.posture.model import Path, Rule, Settings, Subject
from casemate.posture.podview import mapping, seq
from casemate.posture.rules import RULES_BY_ID

__all__ = ["FIXES", "FixResult", "Patch", "default_deny_policies", "fix_text", "fixable_rules"]

_DROP_ALL: Final = object()

#: rule id → the value the finding's field is set to (``_DROP_ALL``: add ALL to a drop list).
FIXES: Final[Mapping[str, object]] = {
    "escape.privileged": False,
    "escape.host-namespaces": False,
    "escape.privilege-escalation": False,
    "escape.run-as-non-root": True,
    "escape.seccomp-unconfined": "RuntimeDefault",
    "escape.seccomp-required": "RuntimeDefault",
    "escape.apparmor": "RuntimeDefault",
    "escape.proc-mount": "Default",
    "escape.proc-mount-restricted": "Default",
    "escape.capabilities-restricted": _DROP_ALL,
    "escape.read-only-root-fs": True,
    "escape.share-process-namespace": False,
    "escape.windows-host-process": False,
    "images.pull-policy": "Always",
    "rbac.automount-token": False,
    "rbac.serviceaccount-automount": False,
}
_APPARMOR_ANNOTATION: Final = "runtime/default"


def fixable_rules() -> tuple[Rule, ...]:
    return tuple(RULES_BY_ID[r] for r in FIXES)


@dataclass(frozen=True)
class Patch:
    rule_id: str
    path: Path
    value: object


def _patch(rule_id: str, path: Path) -> Patch | None:
    value = FIXES.get(rule_id)
    if value is None or not path:
        return None
    if value is _DROP_ALL:
        if path[-1] != "drop":
            return None  # an added capability: which ones are needed is the user's call
        return Patch(rule_id, path, _DROP_ALL)
    if rule_id == "escape.apparmor" and "annotations" in path:
        return Patch(rule_id, path, _APPARMOR_ANNOTATION)
    if rule_id.startswith("escape.seccomp") and "annotations" in path:
        return Patch(rule_id, path, "runtime/default")
    return Patch(rule_id, path, value)


@dataclass(frozen=True)
class FixResult:
    text: str
    applied: tuple[Patch, ...]
    problems: tuple[LoadProblem, ...]


def _set(root: Any, path: Path, value: object) -> bool:
    node = root
    for key in path[:-1]:
        if isinstance(key, int):
            if not isinstance(node, list) or not 0 <= key < len(node):
                return False
            node = node[key]
        else:
            if not isinstance(node, dict):
                return False
            if node.get(key) is None:
                node[key] = CommentedMap()
            node = node[key]
    last = path[-1]
    if not isinstance(node, dict) or isinstance(last, int):
        return False
    if value is _DROP_ALL:
        current = node.get(last)
        if isinstance(current, list):
            current.append("ALL")
        else:
            node[last] = CommentedSeq(["ALL"])
        return True
    node[last] = value
    return True


def _roots(doc: object) -> Iterable[tuple[int, Any]]:
    """(1-based first line, mapping) of a ruamel document and of a List's items."""
    if not isinstance(doc, CommentedMap):
        return
    yield doc.lc.line + 1, doc
    items = doc.get("items")
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(items, CommentedSeq):
        for item in items:
            if isinstance(item, CommentedMap):
                yield item.lc.line + 1, item


def fix_text(text: str, file: str, settings: Settings | None = None) -> FixResult:
    """The file's text with every fixable finding fixed (unchanged text when none)."""
    scanner = Scanner(fixable_rules(), settings)
    wanted: dict[int, list[Patch]] = {}
    problems: list[LoadProblem] = []
    for item in parse_documents(text.encode(), file):
        if isinstance(item, LoadProblem):
            problems.append(item)
            continue
        line_of = item.source.line_of if item.source is not None else None
        root_line = line_of(()) if line_of is not None else None
        if root_line is None:
            continue
        for finding in scanner.check(item):
            patch = _patch(finding.rule_id, finding.parts)
            if patch is not None:
                wanted.setdefault(root_line, []).append(patch)
    if not wanted:
        return FixResult(text, (), tuple(problems))
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    try:
        docs = list(yaml.load_all(text))
    except YAMLError as e:
        problems.append(LoadProblem(file, f"cannot rewrite the file: {e}"))
        return FixResult(text, (), tuple(problems))
    applied: list[Patch] = []
    for doc in docs:
        for line, root in _roots(doc):
            patches = wanted.pop(line, [])
            applied.extend(p for p in patches if _set(root, p.path, p.value))
    if not applied:
        return FixResult(text, (), tuple(problems))
    out = io.StringIO()
    yaml.explicit_start = text.lstrip().startswith("---")
    yaml.dump_all(docs, out)
    return FixResult(out.getvalue(), tuple(applied), tuple(problems))


# Generated NetworkPolicies -----------------------------------------------------------------------


def _policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "casemate-posture"},
        },
        "spec": spec,
    }


def default_deny_policies(namespace: str, services: Sequence[Subject]) -> list[dict[str, Any]]:
    """Default deny for ``namespace``, DNS egress, and an allow rule per Service (from the
    namespace's own pods to the Service's pods on its target ports)."""
    policies = [
        _policy(
            "default-deny",
            namespace,
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        ),
        _policy(
            "allow-dns",
            namespace,
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                    }
                ],
            },
        ),
    ]
    for service in services:
        spec = mapping(service.obj.get("spec"))
        selector = mapping(spec.get("selector"))
        if not selector or not service.name:
            continue
        ports = []
        for port in seq(spec.get("ports")):
            port = mapping(port)
            target = port.get("targetPort", port.get("port"))
            if target is not None:
                ports.append({"protocol": str(port.get("protocol", "TCP")), "port": target})
        if not ports:
            continue
        ingress = {"from": [{"podSelector": {}}], "ports": ports}
        allow = {
            "podSelector": {"matchLabels": {str(k): str(v) for k, v in selector.items()}},
            "policyTypes": ["Ingress"],
            "ingress": [ingress],
        }
        policies.append(_policy(f"allow-to-{service.name}"[:63], namespace, allow))
        # the clients (the namespace's pods) may connect out to those pods too
        policies.append(
            _policy(
                f"allow-from-{service.name}"[:63],
                namespace,
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [{"to": [{"podSelector": allow["podSelector"]}], "ports": ports}],
                },
            )
        )
    return policies


# Live objects: kubectl patch ---------------------------------------------------------------------

_NAMED_LISTS: Final = frozenset({"containers", "initContainers", "ephemeralContainers"})


def strategic_patch(obj: Mapping[str, Any], patches: Sequence[Patch]) -> dict[str, Any]:
    """One strategic merge patch applying ``patches`` to a live object: containers are
    addressed by name (their merge key), other lists are written whole."""
    out: dict[str, Any] = {}
    for patch in patches:
        node: Any = obj
        target = out
        parts = patch.path
        i = 0
        while i < len(parts) - 1:
            key = parts[i]
            nxt = parts[i + 1]
            current = node.get(key) if isinstance(node, Mapping) else None
            if key in _NAMED_LISTS and isinstance(nxt, int) and isinstance(current, list):
                container = current[nxt] if 0 <= nxt < len(current) else {}
                name = mapping(container).get("name")
                entries = target.setdefault(str(key), [])
                entry = next((e for e in entries if e.get("name") == name), None)
                if entry is None:
                    entry = {"name": name}
                    entries.append(entry)
                target, node = entry, container
                i += 2
                continue
            target = target.setdefault(str(key), {})
            node = current
            i += 1
        last = str(parts[-1])
        value: object = patch.value
        if value is _DROP_ALL:
            existing = seq(mapping(node).get(last))
            value = [*existing, "ALL"]
        target[last] = value
    return out


def kubectl_patch(obj: Mapping[str, Any], patches: Sequence[Patch]) -> str:
    """The ``kubectl patch`` command line applying ``patches`` to a live object."""
    import json
    import shlex

    meta = mapping(obj.get("metadata"))
    kind = str(obj.get("kind", "")).lower()
    group = str(obj.get("apiVersion", "")).partition("/")
    resource = f"{kind}.{group[0]}" if group[1] and group[0] else kind
    argv = ["kubectl", "patch", resource, str(meta.get("name", ""))]
    if meta.get("namespace"):
        argv += ["-n", str(meta["namespace"])]
    body = json.dumps(strategic_patch(obj, patches), separators=(",", ":"))
    return " ".join(shlex.quote(a) for a in argv) + " --type=strategic -p " + shlex.quote(body)


def live_patches(subject: Subject, settings: Settings | None = None) -> list[Patch]:
    """The fixes for one live object's fixable findings."""
    found = Scanner(fixable_rules(), settings).check(subject)
    return [p for f in found if (p := _patch(f.rule_id, f.parts)) is not None]
