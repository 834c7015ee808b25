"""Custom rules in CEL: Kubernetes ValidatingAdmissionPolicy objects evaluated by the posture
engine (manifests, live objects and the webhook) before any cluster runs them.

Each ``spec.validations`` entry becomes one rule (``cel.<policy>.<index>``, family ``cel``,
severity from the policy's ``casemate.io/severity`` annotation, else medium). Supported:
``spec.matchConstraints.resourceRules`` (API groups and resources; ``*``),
``spec.matchConditions``, ``spec.variables`` (as ``variables.NAME``), ``object`` (``oldObject``,
``params``, ``request`` and ``authorizer`` are not available: an expression naming them is
refused), ``validations[].message`` and ``messageExpression``. The expressions are evaluated by
cel-python (standard CEL with its macros) plus these Kubernetes extension functions:
:data:`EXTENSIONS`. Every other function (the quantity, URL, IP/CIDR, authorizer and format
libraries...) is refused when the policy is loaded, naming the function. An expression that
fails at evaluation time reports the object as violating the rule (fail closed, as
``failurePolicy: Fail``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError

from casemate.errors import PolicyError
from casemate.posture.model import Hit, Rule, Settings, Severity, Subject
from casemate.posture.podview import mapping, seq

__all__ = ["EXTENSIONS", "STANDARD", "load_cel_rules"]

#: Standard CEL functions and macros cel-python implements.
STANDARD: Final = frozenset(
    {
        "size", "contains", "startsWith", "endsWith", "matches", "has", "all", "exists",
        "exists_one", "map", "filter", "int", "uint", "double", "string", "bytes", "bool",
        "type", "duration", "timestamp", "dyn", "getDate", "getDayOfMonth", "getDayOfWeek",
        "getDayOfYear", "getFullYear", "getMonth", "getHours", "getMilliseconds",
        "getMinutes", "getSeconds",
    }
)  # fmt: skip


def _s(value: Any) -> str:
    return str(value)


def _lower(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_s(value).lower())


def _upper(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_s(value).upper())


def _trim(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_s(value).strip())


def _split(value: Any, sep: Any) -> celtypes.ListType:
    return celtypes.ListType([celtypes.StringType(p) for p in _s(value).split(_s(sep))])


def _join(values: Any, sep: Any = "") -> celtypes.StringType:
    return celtypes.StringType(_s(sep).join(_s(v) for v in values))


def _replace(value: Any, old: Any, new: Any) -> celtypes.StringType:
    return celtypes.StringType(_s(value).replace(_s(old), _s(new)))


def _index_of(value: Any, item: Any) -> celtypes.IntType:
    if isinstance(value, list):
        return celtypes.IntType(value.index(item) if item in value else -1)
    return celtypes.IntType(_s(value).find(_s(item)))


def _last_index_of(value: Any, item: Any) -> celtypes.IntType:
    if isinstance(value, list):
        found = [i for i, v in enumerate(value) if v == item]
        return celtypes.IntType(found[-1] if found else -1)
    return celtypes.IntType(_s(value).rfind(_s(item)))


def _substring(value: Any, start: Any, end: Any = None) -> celtypes.StringType:
    text = _s(value)
    return celtypes.StringType(text[int(start) : int(end) if end is not None else len(text)])


def _find(value: Any, pattern: Any) -> celtypes.StringType:
    m = re.search(_s(pattern), _s(value))
    return celtypes.StringType(m.group(0) if m else "")


def _find_all(value: Any, pattern: Any) -> celtypes.ListType:
    return celtypes.ListType(
        [celtypes.StringType(m.group(0)) for m in re.finditer(_s(pattern), _s(value))]
    )


def _sum(values: Any) -> Any:
    total: Any = celtypes.IntType(0)
    for v in values:
        total = total + v
    return total


def _is_sorted(values: Any) -> celtypes.BoolType:
    items = list(values)
    return celtypes.BoolType(all(a <= b for a, b in zip(items, items[1:], strict=False)))


#: Kubernetes CEL extension functions implemented here (strings, lists and regex libraries).
EXTENSIONS: Final[Mapping[str, Callable[..., Any]]] = {
    "lowerAscii": _lower,
    "upperAscii": _upper,
    "trim": _trim,
    "split": _split,
    "join": _join,
    "replace": _replace,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "substring": _substring,
    "find": _find,
    "findAll": _find_all,
    "sum": _sum,
    "min": lambda values: min(values),
    "max": lambda values: max(values),
    "isSorted": _is_sorted,
}
_VARIABLES: Final = frozenset({"object", "variables"})
_UNAVAILABLE: Final = frozenset({"oldObject", "params", "request", "authorizer", "namespaceObject"})

#: kind → (API group, resource) for matchConstraints.
_RESOURCES: Final = {
    "Pod": ("", "pods"), "Service": ("", "services"), "ConfigMap": ("", "configmaps"),
    "Secret": ("", "secrets"), "ServiceAccount": ("", "serviceaccounts"),
    "Namespace": ("", "namespaces"), "LimitRange": ("", "limitranges"),
    "ResourceQuota": ("", "resourcequotas"), "PodTemplate": ("", "podtemplates"),
    "ReplicationController": ("", "replicationcontrollers"),
    "PersistentVolumeClaim": ("", "persistentvolumeclaims"),
    "Deployment": ("apps", "deployments"), "StatefulSet": ("apps", "statefulsets"),
    "DaemonSet": ("apps", "daemonsets"), "ReplicaSet": ("apps", "replicasets"),
    "Job": ("batch", "jobs"), "CronJob": ("batch", "cronjobs"),
    "Ingress": ("networking.k8s.io", "ingresses"),
    "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "Role": ("rbac.authorization.k8s.io", "roles"),
    "ClusterRole": ("rbac.authorization.k8s.io", "clusterroles"),
    "RoleBinding": ("rbac.authorization.k8s.io", "rolebindings"),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io", "clusterrolebindings"),
}  # fmt: skip


def _names(ast: Any) -> Iterator[tuple[str, str]]:
    """("function"|"ident", name) of every call and identifier in a parsed expression."""
    for tree in ast.iter_subtrees():
        if tree.data == "member_dot_arg":
            yield "function", str(tree.children[1])
        elif tree.data == "ident_arg":
            yield "function", str(tree.children[0])
        elif tree.data == "ident":
            yield "ident", str(tree.children[0])


@dataclass(frozen=True)
class _Compiled:
    text: str
    program: Any


class _Policy:
    def __init__(self, obj: Mapping[str, Any], env: Any) -> None:
        meta = mapping(obj.get("metadata"))
        self.name = str(meta.get("name") or "")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.name):
            raise PolicyError(f"ValidatingAdmissionPolicy name {self.name!r} is not valid")
        self.env = env
        spec = mapping(obj.get("spec"))
        severity = mapping(meta.get("annotations")).get("casemate.io/severity", "medium")
        try:
            self.severity = Severity.parse(str(severity))
        except ValueError as e:
            raise PolicyError(f"policy {self.name}: {e}") from None
        self.rules = [
            mapping(r) for r in seq(mapping(spec.get("matchConstraints")).get("resourceRules"))
        ]
        self.conditions = [
            self.compile(str(mapping(c).get("expression", "")), f"matchConditions[{i}]")
            for i, c in enumerate(seq(spec.get("matchConditions")))
        ]
        self.variables = [
            (
                str(mapping(v).get("name")),
                self.compile(str(mapping(v).get("expression", "")), f"variables[{i}]"),
            )
            for i, v in enumerate(seq(spec.get("variables")))
        ]
        self.validations = seq(spec.get("validations"))
        if not self.validations:
            raise PolicyError(f"policy {self.name} has no validations")

    def compile(self, text: str, where: str) -> _Compiled:
        try:
            ast = self.env.compile(text)
        except CELParseError as e:
            message = " ".join(str(e).split())[:300]
            raise PolicyError(f"policy {self.name} {where}: not valid CEL: {message}") from None
        for kind, name in _names(ast):
            if kind == "function" and name not in STANDARD and name not in EXTENSIONS:
                raise PolicyError(
                    f"policy {self.name} {where}: {name}() is not supported by Casemate's CEL "
                    f"(supported extensions: {', '.join(sorted(EXTENSIONS))})"
                )
            if kind == "ident" and name in _UNAVAILABLE:
                raise PolicyError(
                    f"policy {self.name} {where}: {name} is not available when posture "
                    "evaluates policies (only object and variables)"
                )
        return _Compiled(text, self.env.program(ast, functions=dict(EXTENSIONS)))

    def matches(self, subject: Subject) -> bool:
        target = _RESOURCES.get(subject.kind)
        if target is None:
            return False
        group, resource = target
        for r in self.rules:
            groups = [str(g) for g in seq(r.get("apiGroups"))]
            resources = [str(x) for x in seq(r.get("resources"))]
            if ("*" in groups or group in groups) and ("*" in resources or resource in resources):
                return True
        return False


def _evaluate(compiled: _Compiled, activation: dict[str, Any]) -> Any:
    try:
        result = compiled.program.evaluate(activation)
    except CELEvalError as e:
        raise ValueError(_eval_message(e)) from None
    if isinstance(result, CELEvalError):
        raise ValueError(_eval_message(result))
    return result


def _eval_message(error: CELEvalError) -> str:
    args = error.args
    if len(args) >= 3 and args[2]:
        return f"{args[0]}: {args[2][0] if isinstance(args[2], tuple) else args[2]}"
    return str(args[0]) if args else "evaluation error"


def _rule(policy: _Policy, index: int, validation: Mapping[str, Any]) -> Rule:
    expression = str(validation.get("expression", ""))
    compiled = policy.compile(expression, f"validations[{index}]")
    message_expression = validation.get("messageExpression")
    message_program = (
        policy.compile(str(message_expression), f"validations[{index}].messageExpression")
        if message_expression
        else None
    )
    message = str(validation.get("message") or f"failed {expression}")

    def check(subject: Subject, settings: Settings) -> Iterator[Hit]:
        if not policy.matches(subject):
            return
        activation: dict[str, Any] = {"object": json_to_cel(dict(subject.obj))}
        try:
            for condition in policy.conditions:
                if not bool(_evaluate(condition, activation)):
                    return
            variables: dict[str, Any] = {}
            for name, program in policy.variables:
                activation["variables"] = celtypes.MapType(
                    {celtypes.StringType(k): v for k, v in variables.items()}
                )
                variables[name] = _evaluate(program, activation)
            activation["variables"] = celtypes.MapType(
                {celtypes.StringType(k): v for k, v in variables.items()}
            )
            passed = _evaluate(compiled, activation)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            yield Hit((), None, f"{policy.name}: could not evaluate {expression}: {e}"[:500])
            return
        if passed is not True and passed != celtypes.BoolType(True):
            text = message
            if message_program is not None:
                try:
                    text = str(_evaluate(message_program, activation))
                except (ValueError, TypeError, KeyError, AttributeError):
                    pass
            yield Hit((), None, text)

    return Rule(
        id=f"cel.{policy.name}.{index}",
        family="cel",
        severity=policy.severity,
        title=message[:120],
        explanation=f"ValidatingAdmissionPolicy {policy.name}: {expression}",
        fix=message,
        check=check,
    )


def load_cel_rules(objects: Iterable[Mapping[str, Any]]) -> list[Rule]:
    """Rules from ValidatingAdmissionPolicy objects (other kinds are ignored); ``PolicyError``
    naming the policy and the expression for anything that cannot be evaluated here."""
    env = celpy.Environment()
    rules: list[Rule] = []
    for obj in objects:
        if obj.get("kind") != "ValidatingAdmissionPolicy":
            continue
        policy = _Policy(obj, env)
        rules += [_rule(policy, i, mapping(v)) for i, v in enumerate(policy.validations)]
    return rules
