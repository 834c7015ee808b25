"""The frozen semantic model of a kubectl or helm command line (:class:`KubeCommand`, built by
:func:`casemate.bastion.kubectl.parse_command`) and the refusal of one (:class:`CommandRefused`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from casemate.bastion.kinds import CATEGORY_ALL
from casemate.errors import Denied

__all__ = ["CommandRefused", "KubeCommand", "ResourceRef"]


class CommandRefused(Denied):
    """A kubectl/helm command line that Casemate will not run, whatever the policy says."""

    title = "Command refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"command refused: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ResourceRef:
    """One object or kind a command targets. ``name`` None means "all of this kind" (or those
    a selector picks); ``namespace`` is set only when the reference itself carries one (``kubectl
    cp ns/pod:path``, objects read from manifests by the driver)."""

    kind: str
    name: str | None = None
    namespace: str | None = None

    def display(self) -> str:
        return self.kind if self.name is None else f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class KubeCommand:
    """What a kubectl or helm command line means.

    ``flags`` holds every flag given, in order, as (canonical long name, value): booleans as
    ``"true"``/``"false"``, optional-value flags given bare as their implicit value. The
    convenience fields (namespace, selector, output, ...) are derived from it.

    ``file_kinds`` is filled by the driver after reading the manifests named by ``files`` (and
    rendering a helm chart): None means "not inspected", and the policy then assumes the worst
    for conditions on kinds and namespaces.
    """

    tool: str
    verb: str
    subverb: str | None = None
    resources: tuple[ResourceRef, ...] = ()
    namespace: str | None = None
    all_namespaces: bool = False
    selector: str | None = None
    field_selector: str | None = None
    all: bool = False
    flags: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()
    local_paths: tuple[str, ...] = ()
    output: str | None = None
    dry_run: str = "none"
    replicas: int | None = None
    privileged: bool = False
    raw: str | None = None
    chart: str | None = None
    args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    file_kinds: tuple[ResourceRef, ...] | None = None
    argv: tuple[str, ...] = ()

    # Derived views ---------------------------------------------------------------------

    @property
    def path(self) -> tuple[str, ...]:
        """``("rollout", "undo")``, ``("create", "secret", "generic")``, ``("get",)``."""
        return (self.verb, *(self.subverb.split() if self.subverb else ()))

    def has_flag(self, name: str) -> bool:
        return any(flag == name for flag, _ in self.flags)

    def flag_values(self, name: str) -> tuple[str, ...]:
        return tuple(value for flag, value in self.flags if flag == name)

    def flag(self, name: str) -> str | None:
        """The effective (last) value of a flag, or None if absent."""
        values = self.flag_values(name)
        return values[-1] if values else None

    @property
    def needs_inspection(self) -> bool:
        """Whether the command acts on manifests or a chart the driver has not inspected."""
        return bool(self.files or self.chart) and self.file_kinds is None

    @property
    def targets(self) -> tuple[ResourceRef, ...]:
        """Resources named on the command line plus those the driver found in manifests."""
        return self.resources + (self.file_kinds or ())

    @property
    def kinds(self) -> frozenset[str]:
        """Canonical kinds targeted, with the category ``all`` expanded to its built-ins."""
        kinds: set[str] = set()
        for ref in self.targets:
            kinds.add(ref.kind)
            if ref.kind == "all":
                kinds.update(CATEGORY_ALL)
        return frozenset(kinds)

    @property
    def data_output(self) -> bool:
        """Whether the output shows object contents: anything but the table, ``wide`` or
        ``name`` (``--raw`` reads count: their output is ``"raw"``)."""
        return self.output not in (None, "wide", "name")

    @property
    def bulk(self) -> bool:
        """Whether the command targets an unnamed set of objects: ``--all``, a selector,
        ``--all-namespaces``, or a kind without names."""
        if self.all or self.all_namespaces or self.selector is not None:
            return True
        if self.field_selector is not None:
            return True
        return any(ref.name is None for ref in self.resources)

    @property
    def normalized(self) -> str:
        """The command in one canonical spelling, for regular expressions in rules:
        ``tool verb [subverb] kind/name... args... --flag=value... [-- command...]``."""
        parts = [self.tool, *self.path]
        parts += [ref.display() for ref in self.resources]
        parts += self.args
        parts += [f"--{name}={value}" for name, value in self.flags]
        if self.command:
            parts += ["--", *self.command]
        return " ".join(parts)

    def with_file_kinds(self, refs: Iterable[ResourceRef]) -> KubeCommand:
        """A copy carrying what the driver found in the manifests (or rendered chart)."""
        return replace(self, file_kinds=tuple(refs))
