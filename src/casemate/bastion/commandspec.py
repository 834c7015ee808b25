"""The vocabulary of the command tables (:mod:`casemate.bastion.commands` for kubectl,
:mod:`casemate.bastion.helmcommands` for helm): flag, command and tool specs.

Flag specs use a compact notation, one string per flag::

    "A/all-namespaces"      boolean, short -A          (NoOptDefVal "true")
    "o/output="             takes a value, short -o
    "f/filename=,"          takes a value; comma-separated list (pflag StringSlice)
    "dry-run?unchanged"     optional value (NoOptDefVal "unchanged": --dry-run alone)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "IDENTITY",
    "FlagGroup",
    "FlagSpec",
    "Positional",
    "ToolSpec",
    "VerbSpec",
    "flags",
    "refused",
    "verb",
]

FlagKind = Literal["bool", "value", "optional"]

Positional = Literal[
    "none",  # no positional arguments
    "resources",  # TYPE[,TYPE] [NAME...] | TYPE/NAME... (kubectl resource builder)
    "names",  # NAME... of `kind` (TYPE/NAME also accepted)
    "name",  # exactly one NAME of `kind` (create <sub>, run)
    "target",  # one POD or TYPE/NAME (default kind `kind`), then extra args
    "targets",  # POD or TYPE/NAME, several (debug)
    "cp",  # kubectl cp SRC DST
    "free",  # plain words (completion shell, help topics, auth can-i VERB RESOURCE)
    "paths",  # local paths (kustomize DIR, helm lint/package/verify/create)
    "charts",  # helm show/dependency: one local chart path
    "release",  # one helm release name, then extra args (rollback REVISION)
    "releases",  # helm release names
    "install",  # helm install/template: [NAME] CHART
    "upgrade",  # helm upgrade: RELEASE CHART
]

SpecStyle = Literal["", "label", "taint", "env", "image", "selector", "last"]


@dataclass(frozen=True)
class FlagSpec:
    name: str
    short: str | None = None
    kind: FlagKind = "bool"
    noopt: str = ""
    listy: bool = False
    refuse: str = ""

    @property
    def takes_value(self) -> bool:
        """Whether the next argument is consumed when no ``=value`` is given."""
        return self.kind == "value"


def _parse_flag(text: str, refuse: str = "") -> FlagSpec:
    short: str | None = None
    if len(text) > 2 and text[1] == "/":
        short, text = text[0], text[2:]
    if text.endswith("=,"):
        return FlagSpec(text[:-2], short, "value", listy=True, refuse=refuse)
    if text.endswith("="):
        return FlagSpec(text[:-1], short, "value", refuse=refuse)
    if "?" in text:
        name, _, default = text.partition("?")
        return FlagSpec(name, short, "optional", noopt=default, refuse=refuse)
    return FlagSpec(text, short, "bool", noopt="true", refuse=refuse)


FlagGroup = tuple[FlagSpec, ...]


def flags(*specs: str) -> FlagGroup:
    return tuple(_parse_flag(s) for s in specs)


def refused(reason: str, *specs: str) -> FlagGroup:
    return tuple(_parse_flag(s, reason) for s in specs)


def _table(groups: Iterable[FlagGroup]) -> dict[str, FlagSpec]:
    table: dict[str, FlagSpec] = {}
    for group in groups:
        for spec in group:
            table[spec.name] = spec
    return table


@dataclass(frozen=True)
class VerbSpec:
    """A kubectl/helm command or sub-command."""

    name: str
    flags: Mapping[str, FlagSpec] = field(default_factory=dict)
    positional: Positional = "none"
    kind: str | None = None
    specs: SpecStyle = ""
    dash_command: bool = False
    aliases: tuple[str, ...] = ()
    subverbs: Mapping[str, VerbSpec] = field(default_factory=dict)
    subverb_required: bool = False
    refuse: str = ""
    selects: bool = True  # -l/--selector selects objects (False: it is a field of a new object)

    def short_table(self) -> dict[str, FlagSpec]:
        return {spec.short: spec for spec in self.flags.values() if spec.short}

    def find_subverb(self, word: str) -> VerbSpec | None:
        for sub in self.subverbs.values():
            if word == sub.name or word in sub.aliases:
                return sub
        return None


def verb(
    name: str,
    *groups: FlagGroup,
    positional: Positional = "none",
    kind: str | None = None,
    specs: SpecStyle = "",
    dash_command: bool = False,
    aliases: tuple[str, ...] = (),
    subverbs: Iterable[VerbSpec] = (),
    subverb_required: bool = False,
    refuse: str = "",
    selects: bool = True,
) -> VerbSpec:
    return VerbSpec(
        name=name,
        flags=_table(groups),
        positional=positional,
        kind=kind,
        specs=specs,
        dash_command=dash_command,
        aliases=aliases,
        subverbs={sub.name: sub for sub in subverbs},
        subverb_required=subverb_required,
        refuse=refuse,
        selects=selects,
    )


@dataclass(frozen=True)
class ToolSpec:
    """A tool: its global (persistent) flags and its commands, as one root ``VerbSpec``."""

    name: str
    root: VerbSpec
    normalize_underscores: bool
    # long flag name -> how its value names local paths: "list" (comma list of paths),
    # "path" (one path), "keyed" (comma list of [KEY=]PATH), "setfile" (KEY=PATH,...)
    path_flags: Mapping[str, str]

    @property
    def global_flags(self) -> Mapping[str, FlagSpec]:
        return self.root.flags


# the refusal reason of the flags that change who runs a command, or against which cluster
IDENTITY: Final = "changes the identity, credentials or target cluster of the command"
