"""kubectl and helm command lines → a frozen semantic model (:class:`KubeCommand`).

The parser reproduces how the real tools read their argv (cobra + pflag):

* the command path (``rollout undo``, ``create secret generic``) is found the way cobra's
  ``Command.Find`` does it, including its quirks (a flag it does not know is assumed to take
  the next argument);
* flags are then parsed like pflag: ``-n x``, ``-nx``, ``-n=x``, ``--namespace x``,
  ``--namespace=x``, clusters of short booleans (``-it``), booleans only take a value with
  ``=`` (``--wait=false``), optional-value flags (``--dry-run``) likewise, ``--`` ends flags,
  flags may appear anywhere (interspersed), no abbreviations, and kubectl (not helm) treats
  ``_`` in long names as ``-``;
* positional arguments are interpreted like kubectl's resource builder (``TYPE[,TYPE] NAME...``
  or ``TYPE/NAME...``, aliases, case-insensitive kinds; see :mod:`casemate.bastion.kinds`).

Unknown commands (kubectl would look for a plugin), unknown sub-commands, unknown flags (an
unknown flag might take a value and shift every later argument) and flags that change identity
or target are refused with :class:`CommandRefused`. So are URLs where a file is expected, raw
API paths that are not plain absolute paths, and helm chart references that are not local
paths. Local paths are collected in :attr:`KubeCommand.files` and
:attr:`KubeCommand.local_paths`; :func:`check_paths` confines them to the session workspace.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from casemate.bastion import kubeargs
from casemate.bastion.cobraflags import (
    Flagset,
    args_minus_first,
    flagset,
    go_bool,
    go_int,
    normalize_flag,
    strip_flags,
)
from casemate.bastion.commands import TOOLS, FlagSpec, ToolSpec, VerbSpec
from casemate.bastion.kubemodel import CommandRefused, KubeCommand, ResourceRef

__all__ = [
    "CommandRefused",
    "KubeCommand",
    "ResourceRef",
    "canonical_command_path",
    "check_paths",
    "known_command_paths",
    "parse_command",
    "resolve_in_workspace",
]

MAX_VERBOSITY = 5  # -v 6 prints the kubeconfig path (the session directory); 7+ headers, bodies


# Entry points -------------------------------------------------------------------------------


def parse_command(
    argv: Sequence[str], *, workspace: PurePosixPath | str | None = None
) -> KubeCommand:
    """Parse a kubectl or helm argv (``argv[0]`` is the program name).

    With ``workspace``, every local path is also checked with :func:`check_paths`.
    Raises :class:`CommandRefused`.
    """
    argv = tuple(argv)
    if not argv or argv[0] not in TOOLS:
        raise CommandRefused("the command must be kubectl or helm")
    tool = TOOLS[argv[0]]
    for arg in argv[1:]:
        if "\x00" in arg:
            raise CommandRefused("NUL byte in an argument")
    command = _Builder(tool, argv).build()
    if workspace is not None:
        check_paths(command, workspace)
    return command


def check_paths(command: KubeCommand, workspace: PurePosixPath | str) -> None:
    """Refuse any local path of ``command`` that is not inside ``workspace``.

    Contract: this is a *lexical* check (see :func:`resolve_in_workspace`). The driver runs
    the command with the workspace as working directory, and before running it resolves each
    path that exists with ``os.path.realpath`` and checks the result again (with the real path
    of the workspace), so that symbolic links cannot lead outside.
    """
    for path in (*command.files, *command.local_paths):
        resolve_in_workspace(path, workspace)


def resolve_in_workspace(path: str, workspace: PurePosixPath | str) -> PurePosixPath:
    """Resolve ``path`` (relative to ``workspace``, or absolute) lexically: ``..`` and ``.``
    are folded, symbolic links are *not* followed. Returns the absolute path, or raises
    :class:`CommandRefused` if it is empty, standard input (``-``), a URL, or outside the
    workspace."""
    root = PurePosixPath(posixpath.normpath(str(workspace)))
    if not root.is_absolute() or str(root).startswith("//"):
        raise CommandRefused("the session workspace must be an absolute path")
    if path == "":
        raise CommandRefused("empty path")
    if path == "-":
        raise CommandRefused(
            "reading from standard input is not supported: put the file in the workspace"
        )
    if "://" in path:
        raise CommandRefused(f"URLs are not allowed here ({path!r}): use a file in the workspace")
    if "\x00" in path:
        raise CommandRefused("NUL byte in a path")
    joined = posixpath.normpath(posixpath.join(str(root), path))
    resolved = PurePosixPath(joined)
    if joined.startswith("//") or (resolved != root and root not in resolved.parents):
        raise CommandRefused(f"path {path!r} is outside the session workspace")
    return resolved


def known_command_paths(tool: str) -> frozenset[tuple[str, ...]]:
    """Every canonical command path of a tool (``("rollout", "undo")``, ...), for validating
    policies. Includes the derived ``("debug", "node")``."""
    paths: set[tuple[str, ...]] = set()

    def walk(spec: VerbSpec, prefix: tuple[str, ...]) -> None:
        for sub in spec.subverbs.values():
            path = (*prefix, sub.name)
            paths.add(path)
            walk(sub, path)

    walk(TOOLS[tool].root, ())
    if tool == "kubectl":
        paths.add(("debug", "node"))
    return frozenset(paths)


def canonical_command_path(tool: str, words: Sequence[str]) -> tuple[str, ...] | None:
    """Resolve aliases in a command path (``["create", "cm"]`` → ``("create", "configmap")``);
    None if it is not a command path of ``tool``."""
    spec = TOOLS[tool].root
    path: list[str] = []
    for index, word in enumerate(words):
        sub = spec.find_subverb(word)
        if sub is None:
            if tool == "kubectl" and tuple(path) == ("debug",) and word == "node" and index == 1:
                path.append("node")
                continue
            return None
        path.append(sub.name)
        spec = sub
    return tuple(path) if path else None


# Building the model ----------------------------------------------------------------------------
_DRY_RUN_KUBECTL = {"none": "none", "client": "client", "server": "server", "unchanged": "client"}
_DRY_RUN_HELM = {"none": "none", "client": "client", "server": "server"}
_PRIVILEGED_DEBUG_PROFILES = frozenset({"sysadmin", "netadmin"})
_FILE_OUTPUTS = frozenset(
    {"jsonpath-file", "go-template-file", "templatefile", "custom-columns-file"}
)


class _Builder:
    def __init__(self, tool: ToolSpec, argv: tuple[str, ...]) -> None:
        self.tool = tool
        self.argv = argv
        self.flags: list[tuple[FlagSpec, str]] = []
        self.positionals: list[str] = []
        self.dash_at: int | None = None

    # Finding the command -------------------------------------------------------------

    def _find(self) -> tuple[list[VerbSpec], list[str]]:
        tool = self.tool
        level = tool.root
        path: list[VerbSpec] = []
        rest = list(self.argv[1:])
        while True:
            fs = flagset(tool, level, with_help=False)
            words = strip_flags(tool, fs, rest)
            if not words:
                break
            sub = level.find_subverb(words[0])
            if sub is None:
                if level.subverbs and (level.subverb_required or level is tool.root):
                    where = " ".join([tool.name, *(p.name for p in path)])
                    if level is tool.root:
                        raise CommandRefused(
                            f"unknown {tool.name} command {words[0]!r} "
                            "(plugins and unknown commands are not allowed)"
                        )
                    raise CommandRefused(f"unknown sub-command {words[0]!r} of {where!r}")
                break
            path.append(sub)
            rest = args_minus_first(tool, fs, rest, words[0])
            level = sub
        if not path:
            raise CommandRefused(f"no {tool.name} command given")
        final = path[-1]
        for spec in path:
            if spec.refuse:
                name = " ".join([tool.name, *(p.name for p in path[: path.index(spec) + 1])])
                raise CommandRefused(f"{name!r} is not allowed: {spec.refuse}")
        if final.subverb_required:
            choices = ", ".join(sorted(s.name for s in final.subverbs.values() if not s.refuse))
            raise CommandRefused(
                f"{tool.name} {' '.join(p.name for p in path)} needs a sub-command ({choices})"
            )
        return path, rest

    # pflag ---------------------------------------------------------------------------

    def _parse_flags(self, final: VerbSpec, args: list[str]) -> None:
        fs = flagset(self.tool, final, with_help=True)
        rest = list(args)
        while rest:
            arg = rest.pop(0)
            if arg == "" or arg[0] != "-" or arg == "-":
                self.positionals.append(arg)
                continue
            if arg == "--":
                self.dash_at = len(self.positionals)
                self.positionals.extend(rest)
                return
            if arg.startswith("--"):
                self._long(fs, arg, rest)
            else:
                self._short(fs, arg, rest)

    def _long(self, fs: Flagset, arg: str, rest: list[str]) -> None:
        body = arg[2:]
        if body[0] in "-=":
            raise CommandRefused(f"bad flag syntax {arg!r}")
        name, eq, value = body.partition("=")
        spec = fs.long.get(normalize_flag(self.tool, name))
        if spec is None:
            raise CommandRefused(f"unknown flag --{name} (unknown flags are not allowed)")
        if not eq:
            if spec.noopt:
                value = spec.noopt
            elif rest:
                value = rest.pop(0)
            else:
                raise CommandRefused(f"flag --{name} needs a value")
        self._record(spec, value, f"--{name}")

    def _short(self, fs: Flagset, arg: str, rest: list[str]) -> None:
        shorthands = arg[1:]
        if shorthands.startswith("test."):
            raise CommandRefused(f"bad flag syntax {arg!r}")
        while shorthands:
            letter = shorthands[0]
            spec = fs.short.get(letter)
            if spec is None:
                raise CommandRefused(f"unknown flag -{letter} in {arg!r}")
            if len(shorthands) > 2 and shorthands[1] == "=":
                value, shorthands = shorthands[2:], ""
            elif spec.noopt:
                value, shorthands = spec.noopt, shorthands[1:]
            elif len(shorthands) > 1:
                value, shorthands = shorthands[1:], ""
            elif rest:
                value, shorthands = rest.pop(0), ""
            else:
                raise CommandRefused(f"flag -{letter} needs a value")
            self._record(spec, value, f"-{letter}")

    def _record(self, spec: FlagSpec, value: str, typed: str) -> None:
        if spec.refuse:
            raise CommandRefused(f"flag {typed} (--{spec.name}) is not allowed: {spec.refuse}")
        if spec.kind == "bool":
            parsed = go_bool(value)
            if parsed is None:
                raise CommandRefused(f"flag {typed} takes true or false, not {value!r}")
            value = "true" if parsed else "false"
        self.flags.append((spec, value))

    # Accessors ------------------------------------------------------------------------

    def _last(self, name: str) -> str | None:
        value: str | None = None
        for spec, item in self.flags:
            if spec.name == name:
                value = item
        return value

    def _values(self, name: str) -> list[str]:
        return [item for spec, item in self.flags if spec.name == name]

    def _bool(self, name: str) -> bool:
        return self._last(name) == "true"

    # Build ------------------------------------------------------------------------------

    def build(self) -> KubeCommand:
        path, rest = self._find()
        final = path[-1]
        self._parse_flags(final, rest)
        if any(p == "" for p in self.positionals):
            raise CommandRefused("empty argument")
        verbosity = self._last("v")
        if verbosity is not None:
            # klog parses the level in base 10 only
            level = int(verbosity) if verbosity.isascii() and verbosity.isdigit() else None
            if level is None or level > MAX_VERBOSITY:
                raise CommandRefused(f"verbosity -v above {MAX_VERBOSITY} is not allowed")
        fields = _Fields(path=[p.name for p in path])
        self._positionals(final, fields)
        self._paths(fields)
        return self._command(final, fields)

    def _positionals(self, final: VerbSpec, f: _Fields) -> None:
        before = self.positionals[: self.dash_at] if self.dash_at is not None else self.positionals
        after = self.positionals[self.dash_at :] if self.dash_at is not None else []
        if final.dash_command:
            f.command = list(after)
            args = list(before)
        else:
            args = list(self.positionals)
        mode = final.positional
        kind = final.kind or "pods"
        if mode == "none":
            if args:
                raise CommandRefused(f"unexpected argument {args[0]!r}")
        elif mode == "resources":
            resources, specs = (
                kubeargs.split_specs(final.specs, args) if final.specs else (args, [])
            )
            f.resources = kubeargs.resource_args(resources)
            f.args = specs
        elif mode == "names":
            f.resources = [kubeargs.named(arg, kind) for arg in args]
        elif mode == "name":
            if self.tool.name == "kubectl" and final.name == "run":
                if not args:
                    raise CommandRefused("kubectl run needs a NAME")
                f.resources = [ResourceRef(kind, kubeargs.name_arg(args[0]))]
                f.command = args[1:] + f.command
            else:
                if len(args) != 1:
                    raise CommandRefused(f"exactly one NAME is required, got {len(args)}")
                f.resources = [ResourceRef(kind, kubeargs.name_arg(args[0]))]
        elif mode == "target":
            self._target(final, args, kind, f)
        elif mode == "targets":
            f.resources = [kubeargs.named(arg, kind) for arg in args]
        elif mode == "cp":
            self._cp(args, f)
        elif mode == "free":
            f.args = args
        elif mode == "paths":
            f.local_paths += args
        elif mode == "charts":
            if len(args) != 1:
                raise CommandRefused(f"exactly one chart path is required, got {len(args)}")
            f.chart = kubeargs.chart_arg(args[0])
        elif mode == "release":
            if not args:
                raise CommandRefused("a release name is required")
            f.resources = [ResourceRef("releases", kubeargs.name_arg(args[0]))]
            f.args = args[1:]
        elif mode == "releases":
            if not args:
                raise CommandRefused("a release name is required")
            f.resources = [ResourceRef("releases", kubeargs.name_arg(arg)) for arg in args]
        elif mode in ("install", "upgrade"):
            self._install(mode, args, f)

    def _target(self, final: VerbSpec, args: list[str], kind: str, f: _Fields) -> None:
        if not args:
            return
        f.resources = [kubeargs.named(args[0], kind)]
        extra = args[1:]
        if final.name == "exec" and extra:
            raise CommandRefused("use 'kubectl exec POD -- COMMAND' (with '--')")
        if final.name == "attach" and extra:
            raise CommandRefused(f"unexpected argument {extra[0]!r}")
        if final.name == "logs" and len(extra) > 1:
            raise CommandRefused(f"unexpected argument {extra[1]!r}")
        f.args = extra

    def _cp(self, args: list[str], f: _Fields) -> None:
        if len(args) != 2:
            raise CommandRefused("kubectl cp needs exactly a source and a destination")
        for arg in args:
            colon = arg.find(":")
            if colon == 0:
                raise CommandRefused(f"invalid cp argument {arg!r}")
            if colon < 0:
                f.local_paths.append(arg)
                continue
            pod, _, _remote = arg.partition(":")
            pieces = pod.split("/")
            if len(pieces) == 1:
                f.resources.append(ResourceRef("pods", kubeargs.name_arg(pieces[0])))
            elif len(pieces) == 2:
                f.resources.append(
                    ResourceRef(
                        "pods",
                        kubeargs.name_arg(pieces[1]),
                        namespace=kubeargs.namespace_arg(pieces[0]),
                    )
                )
            else:
                raise CommandRefused(f"invalid cp argument {arg!r}")
        f.args = list(args)

    def _install(self, mode: str, args: list[str], f: _Fields) -> None:
        generate = self._bool("generate-name")
        if mode == "upgrade":
            expected = 2
        elif f.path == ["template"]:
            expected = 1 if generate or len(args) == 1 else 2
        else:
            expected = 1 if generate else 2
        if len(args) != expected:
            raise CommandRefused(
                f"helm {f.path[0]} takes {'[NAME] CHART' if expected == 2 else 'CHART'}; "
                f"got {len(args)} arguments"
            )
        if expected == 2:
            f.resources = [ResourceRef("releases", kubeargs.name_arg(args[0]))]
        f.chart = kubeargs.chart_arg(args[-1])

    def _paths(self, f: _Fields) -> None:
        roles = self.tool.path_flags
        for spec, value in self.flags:
            role = roles.get(spec.name)
            if role is None:
                continue
            if spec.name in ("filename", "kustomize"):
                target = f.files
            else:
                target = f.local_paths
            target.extend(kubeargs.paths_of(role, value, spec.name))
        output = self._last("output")
        if output is not None and self.tool.name == "kubectl":
            if f.path == ["kustomize"]:
                f.local_paths.append(output)  # kustomize -o names the file to write
            else:
                fmt, _, arg = output.partition("=")
                if fmt.lower() in _FILE_OUTPUTS:
                    file = arg or self._last("template")
                    if not file:
                        raise CommandRefused(f"-o {fmt} needs a file")
                    f.local_paths.append(file)
        if f.chart is not None:
            f.local_paths.append(f.chart)

    def _command(self, final: VerbSpec, f: _Fields) -> KubeCommand:
        tool = self.tool.name
        namespace = self._last("namespace")
        output = self._last("output")
        output_format: str | None = None
        if output is not None and not (tool == "kubectl" and f.path == ["kustomize"]):
            output_format = output.partition("=")[0].lower()
        elif tool == "kubectl" and self._last("template") is not None:
            output_format = "go-template"
        raw = self._last("raw")
        if tool == "kubectl" and raw is not None:
            if f.path[0] in ("create", "replace"):
                raise CommandRefused(
                    f"kubectl {f.path[0]} --raw sends a chunked request body, which the API "
                    "proxy does not accept (411): use -f without --raw"
                )
            kubeargs.check_raw(raw)
            f.resources = f.resources + kubeargs.raw_resources(raw)
            if output_format is None:
                output_format = "raw"  # the server's JSON, printed as is
        selector = self._last("selector") if final.selects else None
        subverb = " ".join(f.path[1:]) or None
        if (
            tool == "kubectl"
            and f.path == ["debug"]
            and any(ref.kind == "nodes" for ref in f.resources)
        ):
            subverb = "node"
        return KubeCommand(
            tool=tool,
            verb=f.path[0],
            subverb=subverb,
            resources=tuple(f.resources),
            namespace=kubeargs.namespace_arg(namespace) if namespace is not None else None,
            all_namespaces=self._bool("all-namespaces"),
            selector=selector,
            field_selector=self._last("field-selector"),
            all=self._bool("all") if tool == "kubectl" else False,
            flags=tuple((spec.name, value) for spec, value in self.flags),
            files=tuple(f.files),
            local_paths=tuple(f.local_paths),
            output=output_format,
            dry_run=self._dry_run(tool),
            replicas=self._replicas(),
            privileged=self._privileged(f),
            raw=raw,
            chart=f.chart,
            args=tuple(f.args),
            command=tuple(f.command),
            argv=self.argv,
        )

    def _dry_run(self, tool: str) -> str:
        value = self._last("dry-run")
        if value is None:
            return "none"
        table = _DRY_RUN_KUBECTL if tool == "kubectl" else _DRY_RUN_HELM
        as_bool = go_bool(value)
        if as_bool is not None:
            return "client" if as_bool else "none"
        if value not in table:
            raise CommandRefused(f"invalid --dry-run value {value!r}")
        return table[value]

    def _replicas(self) -> int | None:
        value = self._last("replicas")
        if value is None:
            return None
        number = go_int(value)
        if number is None:
            raise CommandRefused(f"invalid --replicas value {value!r}")
        return number

    def _privileged(self, f: _Fields) -> bool:
        if self.tool.name != "kubectl":
            return False
        if f.path == ["run"]:
            overrides = self._last("overrides")
            return self._bool("privileged") or (
                overrides is not None and kubeargs.overrides_are_privileged(overrides)
            )
        if f.path == ["debug"]:
            profile = (self._last("profile") or "legacy").lower()
            return (
                profile in _PRIVILEGED_DEBUG_PROFILES
                or self._last("custom") is not None
                or any(ref.kind == "nodes" for ref in f.resources)
            )
        return False


@dataclass
class _Fields:
    path: list[str]
    resources: list[ResourceRef] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    local_paths: list[str] = field(default_factory=list)
    chart: str | None = None
