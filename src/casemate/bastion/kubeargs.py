"""The values and positional arguments of a kubectl or helm command, read as the tools read
them, for :mod:`casemate.bastion.kubectl`'s parser: namespaces, names and kinds (checked),
``TYPE[,TYPE] NAME...`` and ``TYPE/NAME`` resource arguments, change specs (``KEY=VALUE``,
``KEY-``), path-valued flags, local chart references, ``--raw`` API paths and the object they
address, and whether a ``kubectl debug --overrides`` document touches pod isolation. Each
refuses what it cannot read safely with :class:`CommandRefused`. Pure."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence

from casemate.bastion.kinds import canonical_kind
from casemate.bastion.kubemodel import CommandRefused, ResourceRef

__all__ = [
    "chart_arg",
    "check_raw",
    "kind_arg",
    "name_arg",
    "named",
    "namespace_arg",
    "overrides_are_privileged",
    "paths_of",
    "raw_resources",
    "resource_args",
    "split_specs",
    "split_types",
    "type_name",
]

_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME_FORBIDDEN = re.compile(r"[\s/%,]")


def namespace_arg(value: str) -> str:
    if len(value) > 63 or not _NAMESPACE.fullmatch(value):
        raise CommandRefused(f"invalid namespace {value!r}")
    return value


def name_arg(value: str) -> str:
    if not value or not value.isascii() or not value.isprintable() or _NAME_FORBIDDEN.search(value):
        raise CommandRefused(f"invalid resource name {value!r}")
    if value in (".", ".."):
        raise CommandRefused(f"invalid resource name {value!r}")
    return value


def kind_arg(value: str) -> str:
    kind = canonical_kind(value)
    if kind is None:
        raise CommandRefused(f"invalid resource type {value!r}")
    return kind


def split_types(value: str) -> list[str]:
    """kubectl's SplitResourceArgument (comma list, duplicates dropped); empty parts refused."""
    types: list[str] = []
    for part in value.split(","):
        if part == "":
            raise CommandRefused(f"empty resource type in {value!r}")
        if part not in types:
            types.append(part)
    return types


def type_name(value: str) -> ResourceRef:
    pieces = value.split("/")
    if len(pieces) != 2 or not pieces[0] or not pieces[1]:
        raise CommandRefused(f"{value!r}: resource/name arguments need exactly one '/'")
    if len(split_types(pieces[0])) != 1:
        raise CommandRefused(f"{value!r}: resource/name arguments take a single resource type")
    return ResourceRef(kind_arg(pieces[0]), name_arg(pieces[1]))


def resource_args(args: Sequence[str]) -> list[ResourceRef]:
    """kubectl's ResourceTypeOrNameArgs."""
    if not args:
        return []
    items = list(args)
    if len(items) >= 2:
        types = split_types(items[0])
        if len(types) > 1:
            items = [f"{t}/{n}" for t in types for n in items[1:]]
    slashed = sum("/" in item for item in items)
    if slashed:
        if slashed != len(items):
            raise CommandRefused(
                "give either TYPE NAME... or TYPE/NAME..., not both in one command"
            )
        return [type_name(item) for item in items]
    kinds = [kind_arg(t) for t in split_types(items[0])]
    names = [name_arg(n) for n in items[1:]]
    if not names:
        return [ResourceRef(kind) for kind in kinds]
    return [ResourceRef(kind, name) for kind in kinds for name in names]


def named(value: str, default_kind: str) -> ResourceRef:
    if "/" in value:
        return type_name(value)
    return ResourceRef(default_kind, name_arg(value))


def split_specs(style: str, args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate resource arguments from change specs (label/annotate/taint/set env/set image
    ``KEY=VALUE``, ``KEY-``...), like kubectl: all resources must come first."""
    if style == "last":
        if not args:
            return [], []
        return list(args[:-1]), [args[-1]]

    def is_spec(arg: str) -> bool:
        if style == "taint":
            return "=" in arg or ":" in arg or arg.endswith("-")
        return ("=" in arg and not arg.startswith("=")) or (arg.endswith("-") and arg != "-")

    resources: list[str] = []
    specs: list[str] = []
    for arg in args:
        if is_spec(arg):
            specs.append(arg)
        elif specs:
            raise CommandRefused(f"all resources must be given before changes (got {arg!r})")
        else:
            resources.append(arg)
    return resources, specs


_DANGEROUS_POD_FIELDS = (
    "privileged",
    "hostpid",
    "hostnetwork",
    "hostipc",
    "hostpath",
    "hostusers",
    "hostport",
    "capabilities",
    "allowprivilegeescalation",
    "procmount",
    "sys_admin",
    "nodename",
    "serviceaccount",
    "automountserviceaccounttoken",
    "seccompprofile",
    "apparmor",
    "selinux",
    "runasuser",
    "runasnonroot",
)


def _json_strings(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)
    elif isinstance(value, str):
        yield value


def overrides_are_privileged(text: str) -> bool:
    """Whether a ``--overrides`` document touches a field that can weaken pod isolation.

    The JSON is decoded (so ``\\u`` escapes cannot hide a name) and every key and string value
    is searched case-insensitively (Go's JSON decoding matches keys case-insensitively, and a
    JSON patch names fields in its string values)."""
    try:
        document = json.loads(text)
    except ValueError:
        raise CommandRefused("--overrides is not valid JSON") from None
    haystack = " ".join(_json_strings(document)).lower()
    return any(field in haystack for field in _DANGEROUS_POD_FIELDS)


def paths_of(role: str, value: str, flag: str) -> list[str]:
    if role == "path":
        return [value]
    if '"' in value:
        raise CommandRefused(f"quoted list values are not supported in --{flag}")
    parts = value.split(",")
    if role == "list":
        return parts
    if role == "keyed":
        paths: list[str] = []
        for part in parts:
            pieces = part.split("=")
            if len(pieces) > 2:
                raise CommandRefused(f"invalid --{flag} value {part!r}")
            paths.append(pieces[-1])
        return paths
    # helm --set-file KEY=PATH[,KEY=PATH]
    if any(c in value for c in "\\{}[]"):
        raise CommandRefused(f"--{flag} supports only KEY=PATH[,KEY=PATH...]")
    paths = []
    for part in parts:
        key, eq, path = part.partition("=")
        if not eq or not key:
            raise CommandRefused(f"invalid --{flag} value {part!r}")
        paths.append(path)
    return paths


def chart_arg(value: str) -> str:
    if "://" in value or value.startswith("oci:"):
        raise CommandRefused(
            f"chart {value!r}: URLs and oci:// references are not allowed; "
            "use a chart directory or archive in the workspace"
        )
    if not (value in (".", "..") or value.startswith(("./", "../", "/"))):
        raise CommandRefused(
            f"chart {value!r}: only local charts are allowed; write it as a path "
            f"(./{value}) — repository charts are not allowed"
        )
    return value


def check_raw(raw: str) -> None:
    if not raw.startswith("/") or raw.startswith("//") or "://" in raw:
        raise CommandRefused(f"--raw takes an absolute API path (/api/...), not {raw!r}")
    path = raw.split("?", 1)[0]
    if "%" in raw or "\\" in raw or "//" in path or "#" in raw:
        raise CommandRefused(f"--raw path {raw!r} contains escapes or empty segments")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise CommandRefused(f"--raw path {raw!r} contains '.' or '..' segments")
    if not raw.isascii() or not raw.isprintable() or " " in raw:
        raise CommandRefused(f"--raw path {raw!r} contains unexpected characters")


def raw_resources(raw: str) -> list[ResourceRef]:
    """The object a raw API path addresses, as the API server routes it:
    ``/api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUBRESOURCE...]]`` and the same under
    ``/apis/GROUP/VERSION``. Non-resource paths (``/healthz``, ``/version``) address none."""
    segments = raw.split("?", 1)[0].strip("/").split("/")
    if segments[:2] == ["api", "v1"]:
        group, rest = "", segments[2:]
    elif segments[0] == "apis" and len(segments) >= 3:
        group, rest = segments[1], segments[3:]
    else:
        return []
    if not rest or rest == [""]:
        return []
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace = namespace_arg(rest[1])
        rest = rest[2:]
    resource = rest[0]
    typed = f"{resource}.{group}" if group else resource
    ref = ResourceRef(kind_arg(typed), name_arg(rest[1]) if len(rest) > 1 else None, namespace)
    if ref.kind == "namespaces" and ref.name is not None and namespace is None:
        ref = ResourceRef("namespaces", ref.name, ref.name)
    return [ref]
