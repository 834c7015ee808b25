"""Running one command line of a bastion session: parse, decide, review, run, audit.

:meth:`CommandRunner.run` is the single path every command takes, whatever the channel
(``casemate exec``, the interactive shell over the web terminal, SSH or ``casemate connect``):

1. **Parse** the line with the restricted shell (:func:`~casemate.bastion.shell.parse_line`) and
   the first stage with the kubectl/helm tables (:func:`~casemate.bastion.kubectl.parse_command`)
   with every local path checked against the workspace, lexically and then with symbolic links
   resolved (:func:`check_real_paths`).
2. **Inspect** the manifests it reads (``-f``/``-k`` files and directories, a helm chart in the
   workspace rendered with ``helm template``): the kinds, names and namespaces found feed the
   policy, and every file is stored by content (:class:`~casemate.bastion.artifacts
   .ArtifactStore`); a manifest that cannot be read leaves the kinds unknown, and the policy
   then assumes the worst.
3. **Decide** with the command policy (:func:`~casemate.bastion.policy.decide`). ``reject``:
   refused with the rule and reason. ``warn``: the warnings are shown and the command runs.
   ``review``: the command is held as a ticket bound to its hash (argv, filters, cluster,
   account, namespace, user, digests of the files it reads) with a preview of what it would
   change (a server-side dry run), the user sees ``waiting for approval (ticket N)``, and the
   command runs only after an approver approved it and :meth:`ReviewService.consume
   <casemate.bastion.review.ReviewService.consume>` released it, once.
4. **Audit before**: a :class:`~casemate.events.CommandDecided` record is committed before
   anything runs (and for every refusal).
5. **Run** the pipeline with no shell: each stage is the real program (kubectl, helm, the GNU
   text tools, jq) started with its argv, the stages connected by pipes, the working directory
   the workspace, the environment the session's (:class:`~casemate.bastion.workenv.WorkEnv`),
   standard input empty. Output (standard output of the last stage and standard error of all)
   is streamed to the user with every secret the caller names masked, whatever the chunking.
   A line ending in ``> FILE`` or ``>> FILE`` sends the standard output into that file instead:
   the path must lie inside the workspace (lexically, and again with symbolic links resolved;
   the file is opened without following a link), the gateway writes it (mode 0600, masked the
   same way, at most :attr:`RunnerLimits.max_redirect_bytes`), and the audit record still holds
   the output.
   An approved interactive command (``kubectl exec -it``, ``attach -it``, ``run -it``,
   ``debug -it``) on a channel with a terminal runs instead on a pty with the user's
   keystrokes as its input (:mod:`casemate.bastion.ptyrun`); without a terminal, ``-t`` is
   refused.
6. **Audit after**: :class:`~casemate.events.CommandFinished` with the exit code, duration,
   approver, the first bytes of the output and the digest and size of all of it; the output
   itself (capped) is stored by content.

Exit codes: the pipeline's (the first failing stage's, else the last's), and
:data:`EXIT_REFUSED` (126) for a refused or unapproved command, :data:`EXIT_TIMEOUT` (124),
:data:`EXIT_INTERRUPTED` (130).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import logging
import os
import secrets as _secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Final

import yaml

from casemate.bastion.artifacts import MAX_MANIFEST_BYTES, ArtifactStore
from casemate.bastion.filters import FILTERS
from casemate.bastion.kinds import canonical_kind, is_builtin
from casemate.bastion.kubectl import (
    CommandRefused,
    KubeCommand,
    ResourceRef,
    parse_command,
    preview_argv,
    resolve_in_workspace,
)
from casemate.bastion.policy import Action, Context, Policy, Verdict, decide
from casemate.bastion.ptyrun import (
    EARLY_FLUSH_MAX,
    IDLE_FLUSH,
    ApiRelease,
    PtyTerminal,
    api_release,
    run_on_pty,
    tty_requested,
    wants_terminal,
)
from casemate.bastion.recording import Redactor
from casemate.bastion.review import ReviewService, Ticket, TicketState, command_hash
from casemate.bastion.shell import ParsedLine, Redirect, ShellRefused, parse_line
from casemate.bastion.workenv import WorkEnv
from casemate.core.audit import AuditLog
from casemate.errors import CasemateError, ConfigError
from casemate.events import CommandDecided, CommandFinished, ContainerInput
from casemate.risks.pods import PodRisk, object_risks

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "CommandResult",
    "CommandRunner",
    "RunnerLimits",
    "SessionInfo",
    "Tools",
    "Writer",
    "check_real_paths",
    "manifest_refs",
    "manifest_risks",
]

log = logging.getLogger(__name__)

EXIT_REFUSED: Final = 126
EXIT_TIMEOUT: Final = 124
EXIT_INTERRUPTED: Final = 130
_AUDIT_OUTPUT_CHARS: Final = 4096
_MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")
_DIFF_VERBS: Final = frozenset({"delete", "scale", "patch", "label", "annotate", "set"})

Writer = Callable[[bytes], Awaitable[None]]
"""Where a command's output goes (the terminal, the HTTP stream); gets redacted bytes."""


@dataclass(frozen=True)
class SessionInfo:
    """Who runs commands where: one bastion session."""

    session_id: str
    user: str
    groups: frozenset[str]
    cluster: str
    account: str
    namespace: str
    namespaces: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class Tools:
    """Absolute paths of the programs a session may run."""

    kubectl: str
    helm: str
    filters: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def find(
        cls,
        kubectl: str | os.PathLike[str] | None = None,
        helm: str | os.PathLike[str] | None = None,
    ) -> Tools:
        """The given kubectl/helm (else found on PATH) and the filter programs on PATH."""

        def locate(name: str, given: str | os.PathLike[str] | None) -> str:
            path = str(given) if given else shutil.which(name)
            if not path or not os.access(path, os.X_OK):
                raise ConfigError(
                    f"{name} was not found: install it or set its path in the settings"
                )
            return os.path.abspath(path)

        found = {name: shutil.which(name) for name in FILTERS}
        return cls(
            kubectl=locate("kubectl", kubectl),
            helm=locate("helm", helm),
            filters={k: os.path.abspath(v) for k, v in found.items() if v},
        )

    def program(self, name: str) -> str:
        if name == "kubectl":
            return self.kubectl
        if name == "helm":
            return self.helm
        path = self.filters.get(name)
        if path is None:
            raise ConfigError(f"{name} is not installed on the gateway")
        return path


@dataclass(frozen=True)
class RunnerLimits:
    timeout: float = 600.0  # one command, seconds
    review_ttl: timedelta = timedelta(minutes=30)  # how long a held command waits
    preview_timeout: float = 20.0
    inspect_timeout: float = 30.0
    max_manifest_bytes: int = MAX_MANIFEST_BYTES
    output_chunk: int = 64 * 1024
    max_redirect_bytes: int = 8 * 1024 * 1024  # a '> FILE' in the workspace


@dataclass(frozen=True)
class CommandResult:
    command_id: str
    decision: str  # accept, warn, review, reject
    exit_code: int
    rule_id: str = ""
    reason: str = ""
    ticket_id: int = 0
    approver: str = ""
    output_sha256: str = ""
    output_size: int = 0


class _Refused(Exception):  # noqa: N818 - internal signal
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Local paths and manifests -------------------------------------------------------------------


def check_real_paths(command: KubeCommand, workspace: Path) -> dict[str, Path]:
    """Resolve every local path of ``command`` that exists, following symbolic links, and
    refuse any that leads outside the workspace. Returns ``{path as typed: real path}``."""
    root = Path(os.path.realpath(workspace))
    found: dict[str, Path] = {}
    for typed in (*command.files, *command.local_paths):
        candidate = Path(os.path.join(root, typed))
        real = Path(os.path.realpath(candidate))
        if real != root and root not in real.parents:
            raise _Refused(f"path {typed!r} leads outside the session workspace")
        if candidate.exists() or candidate.is_symlink():
            found[typed] = real
    return found


def check_redirect(redirect: Redirect, workspace: Path) -> Path:
    """The file a ``> FILE`` writes: inside the workspace lexically, its directory inside with
    symbolic links resolved, and not itself a symbolic link or anything but a regular file.
    Returns the path to open (in the real directory)."""
    typed = redirect.path
    try:
        lexical = resolve_in_workspace(typed, PurePosixPath(str(workspace)))
    except CommandRefused as e:
        raise _Refused(e.reason) from None
    root = Path(os.path.realpath(workspace))
    if lexical == PurePosixPath(str(workspace)) or typed.endswith("/"):
        raise _Refused(f"{typed!r} is a directory, not a file")
    parent = Path(os.path.realpath(Path(str(lexical)).parent))
    if parent != root and root not in parent.parents:
        raise _Refused(f"path {typed!r} leads outside the session workspace")
    if not parent.is_dir():
        raise _Refused(f"{typed}: no such directory in the workspace")
    target = parent / Path(str(lexical)).name
    if target.is_symlink():
        raise _Refused(f"{typed!r} is a symbolic link: not written through")
    if target.exists() and not target.is_file():
        raise _Refused(f"{typed!r} exists and is not a regular file")
    return target


class _OutputTooLarge(Exception):  # noqa: N818 - internal signal
    pass


def _manifest_files(path: Path, recursive: bool) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    pattern = "**/*" if recursive else "*"
    return sorted(
        p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in _MANIFEST_SUFFIXES
    )


def manifest_refs(text: str) -> list[ResourceRef]:
    """The objects of a YAML/JSON manifest stream (``List`` items included). Raises
    ``ValueError`` for anything that is not a stream of Kubernetes objects."""
    refs: list[ResourceRef] = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        _collect(doc, refs, depth=0)
    return refs


def manifest_risks(text: str) -> list[PodRisk]:
    """The pod escape risks (:mod:`casemate.risks.pods`) of every workload in a manifest
    stream. Raises ``yaml.YAMLError`` for text that is not YAML."""
    found: list[PodRisk] = []
    for doc in yaml.safe_load_all(text):
        found += object_risks(doc)
    return found


def _risks_of(data: bytes) -> list[PodRisk]:
    """:func:`manifest_risks` of raw bytes (none for text that is not YAML: its kinds stay
    unknown and the policy assumes the worst of them; the API layer judges every object
    kubectl would still send)."""
    try:
        return manifest_risks(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError):
        return []


def _collect(doc: object, refs: list[ResourceRef], depth: int) -> None:
    if not isinstance(doc, dict) or depth > 3:
        raise ValueError("a manifest document is not a Kubernetes object")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api, str):
        raise ValueError("a manifest object lacks kind or apiVersion")
    if kind.endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            _collect(item, refs, depth + 1)
        return
    group = api.split("/", 1)[0] if "/" in api else ""
    typed = kind.lower()
    canon = canonical_kind(typed)
    if canon is None:
        raise ValueError(f"invalid kind {kind[:40]!r}")
    if not is_builtin(canon) and group and "." not in canon:
        canon = f"{canon}.{group}"
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not a mapping")
    name, namespace = meta.get("name"), meta.get("namespace")
    refs.append(
        ResourceRef(
            canon,
            name if isinstance(name, str) else None,
            namespace if isinstance(namespace, str) else None,
        )
    )


# The runner ------------------------------------------------------------------------------------


class CommandRunner:
    """Runs command lines of sessions (see the module docstring). One per gateway."""

    def __init__(
        self,
        *,
        audit: AuditLog,
        artifacts: ArtifactStore,
        reviews: ReviewService,
        policy: Callable[[], Policy],
        tools: Tools,
        limits: RunnerLimits | None = None,
    ) -> None:
        self.audit = audit
        self.artifacts = artifacts
        self.reviews = reviews
        self.policy = policy
        self.tools = tools
        self.limits = limits or RunnerLimits()

    async def run(
        self,
        line: str,
        info: SessionInfo,
        env: WorkEnv,
        write: Writer,
        *,
        secrets: Iterable[str] = (),
        on_ticket: Callable[[Ticket], Awaitable[None]] | None = None,
        on_release: Callable[[ApiRelease | None], None] | None = None,
        terminal: PtyTerminal | None = None,
    ) -> CommandResult:
        """Run one command line; see the module docstring. ``secrets`` are masked in the
        output, the audit record and the stored output. ``on_ticket`` is told about a held
        command; ``on_release(release)`` is called just before an *approved* command runs and
        ``on_release(None)`` when it has finished (the gateway lets the API proxy pass what
        ``release`` names of that command's review-level requests meanwhile). ``terminal``:
        the user's interactive terminal, on which ``kubectl exec -it`` and the like run
        (:mod:`casemate.bastion.ptyrun`); without one, ``-t`` is refused."""
        secret_list = [s for s in secrets if s]
        redactor = Redactor(secret_list)
        command_id = "cmd_" + _secrets.token_hex(8)
        display = redactor.redact(line.replace("\x00", "\\0"))[:4000]
        try:
            parsed = parse_line(line)
        except ShellRefused as e:
            return await self._refuse(command_id, info, display, (), e.reason, "", write)
        except CasemateError as e:
            return await self._refuse(command_id, info, display, (), e.message, "", write)
        argvs = tuple(tuple(stage.argv) for stage in parsed.stages)
        try:
            workspace = PurePosixPath(str(env.workspace))
            first = parse_command(parsed.first.argv, workspace=workspace)
            real = check_real_paths(first, env.workspace)
            if parsed.redirect is not None:
                check_redirect(parsed.redirect, env.workspace)
            first, digests = await self._inspect(first, real, env)
            interactive = _interactive(first, parsed, terminal, info.namespace, info.namespaces)
        except CommandRefused as e:
            return await self._refuse(command_id, info, display, argvs, e.reason, "", write)
        except _Refused as e:
            return await self._refuse(command_id, info, display, argvs, e.reason, "", write)
        namespace = first.namespace or info.namespace
        ctx = Context(
            user=info.user,
            groups=info.groups,
            cluster=info.cluster,
            account=info.account,
            namespace_default=info.namespace,
            workspace=workspace,
        )
        try:
            policy = self.policy()
        except Exception:
            log.exception("bastion: the command policy cannot be loaded; refusing")
            return await self._refuse(
                command_id, info, display, argvs, "no command policy could be loaded", "", write
            )
        verdict = decide(parsed, ctx, policy, first=first)
        for notice in verdict.warnings:
            await write(f"casemate: warning: {notice.reason} (rule {notice.rule_id})\n".encode())
        if verdict.action == Action.REJECT:
            return await self._refuse(
                command_id,
                info,
                display,
                argvs,
                verdict.reason,
                verdict.rule_id or "",
                write,
                digests=digests,
            )
        ticket_id, approver = 0, ""
        if verdict.action == Action.REVIEW:
            held = await self._hold(
                command_id,
                parsed,
                first,
                info,
                env,
                display,
                argvs,
                verdict,
                digests,
                namespace,
                redactor,
                write,
                on_ticket,
            )
            if isinstance(held, CommandResult):
                return held
            ticket_id, approver = held
        else:
            await self._audit_decided(
                command_id, info, display, argvs, verdict, digests, "allowed", 0
            )
        if on_release is not None and ticket_id:
            on_release(api_release(first, namespace))
        try:
            return await self._execute(
                command_id,
                parsed,
                info,
                env,
                display,
                verdict,
                ticket_id,
                approver,
                write,
                secret_list,
                interactive=(first, terminal) if interactive and terminal is not None else None,
            )
        finally:
            if on_release is not None and ticket_id:
                on_release(None)

    # -- refusals and audit

    async def _refuse(
        self,
        command_id: str,
        info: SessionInfo,
        display: str,
        argvs: tuple[tuple[str, ...], ...],
        reason: str,
        rule_id: str,
        write: Writer,
        *,
        digests: Sequence[str] = (),
    ) -> CommandResult:
        verdict = Verdict(Action.REJECT, rule_id or "shell.refused", reason)
        await self._audit_decided(command_id, info, display, argvs, verdict, digests, "denied", 0)
        rule = f" (rule {rule_id})" if rule_id else ""
        await write(f"casemate: refused: {reason}{rule}\n".encode("utf-8", "replace"))
        return CommandResult(command_id, "reject", EXIT_REFUSED, rule_id, reason)

    async def _audit_decided(
        self,
        command_id: str,
        info: SessionInfo,
        display: str,
        argvs: tuple[tuple[str, ...], ...],
        verdict: Verdict,
        digests: Sequence[str],
        outcome: str,
        ticket_id: int,
    ) -> None:
        event = CommandDecided(
            actor=info.user,
            source=info.source,
            outcome=outcome,
            command_id=command_id,
            session_id=info.session_id,
            cluster=info.cluster,
            account=info.account,
            namespace=info.namespace,
            line=display,
            argv=tuple(tuple(a[:2000] for a in stage) for stage in argvs)
            if outcome != "denied" or argvs
            else (),
            decision=verdict.action.value,
            rule_id=verdict.rule_id or "",
            reason=verdict.reason[:1000],
            warnings=tuple(n.rule_id for n in verdict.warnings),
            ticket_id=ticket_id,
            manifests=tuple(digests),
        )
        # committed before the command runs; off the event loop (an fsync)
        await asyncio.to_thread(self.audit.append, event)

    # -- manifests

    async def _inspect(
        self, command: KubeCommand, real: Mapping[str, Path], env: WorkEnv
    ) -> tuple[KubeCommand, list[str]]:
        if not (command.files or command.chart):
            return command, []
        digests: list[str] = []
        refs: list[ResourceRef] = []
        risks: list[PodRisk] = []
        known = True
        recursive = command.has_flag("recursive") and command.flag("recursive") == "true"
        total = 0
        for typed in command.files:
            path = real.get(typed)
            if path is None:
                raise _Refused(f"{typed}: no such file in the workspace")
            if command.has_flag("kustomize") and typed in command.flag_values("kustomize"):
                known = False  # a kustomization is not rendered here: assume the worst
            for file in _manifest_files(path, recursive):
                data = await asyncio.to_thread(file.read_bytes)
                total += len(data)
                if total > self.limits.max_manifest_bytes:
                    raise _Refused("the manifests are larger than the gateway accepts")
                digests.append(await asyncio.to_thread(self.artifacts.put, data, "manifest"))
                risks += _risks_of(data)
                try:
                    refs += manifest_refs(data.decode("utf-8"))
                except (ValueError, yaml.YAMLError, UnicodeDecodeError):
                    known = False
        if command.chart:
            rendered = await self._render_chart(command, real, env)
            if rendered is None:
                known = False
            else:
                digests.append(await asyncio.to_thread(self.artifacts.put, rendered, "manifest"))
                risks += _risks_of(rendered)
                try:
                    refs += manifest_refs(rendered.decode("utf-8"))
                except (ValueError, yaml.YAMLError, UnicodeDecodeError):
                    known = False
        if risks:
            command = replace(command, privileged=True)
        return (command.with_file_kinds(refs) if known else command), digests

    async def _render_chart(
        self, command: KubeCommand, real: Mapping[str, Path], env: WorkEnv
    ) -> bytes | None:
        chart = command.chart or ""
        if chart not in real:
            return None  # not a local chart: a repository chart is refused by the parser
        # rendered as the install will be: the real release name and namespace, every
        # values flag in the order given (a chart may branch on .Release.Name)
        releases = [r.name for r in command.resources if r.kind == "releases" and r.name]
        if len(releases) != 1:
            return None  # --generate-name: the name is not known yet; assume the worst
        argv = [self.tools.helm, "template", releases[0], str(real[chart])]
        for name, value in command.flags:
            if name in ("values", "set", "set-string", "set-json", "set-literal", "set-file"):
                argv.append(f"--{name}={value}")
            elif name == "namespace":
                argv.append(f"--namespace={value}")
        code, out = await _capture(argv, env, self.limits.inspect_timeout)
        return out if code == 0 else None

    # -- review

    async def _hold(
        self,
        command_id: str,
        parsed: ParsedLine,
        first: KubeCommand,
        info: SessionInfo,
        env: WorkEnv,
        display: str,
        argvs: tuple[tuple[str, ...], ...],
        verdict: Verdict,
        digests: Sequence[str],
        namespace: str,
        redactor: Redactor,
        write: Writer,
        on_ticket: Callable[[Ticket], Awaitable[None]] | None,
    ) -> CommandResult | tuple[int, str]:
        files = {str(p): d for p, d in zip(first.files, digests, strict=False)}
        digest = command_hash(
            parsed.first.argv,
            cluster=info.cluster,
            account=info.account,
            namespace=namespace,
            user=info.user,
            workspace_files=files,
            filters=[stage.argv for stage in parsed.filters],
        )
        preview = redactor.redact(await self._preview(first, env))
        ticket = await asyncio.to_thread(
            self.reviews.submit,
            info.user,
            digest,
            display,
            info.cluster,
            info.account,
            namespace,
            verdict.rule_id or "",
            preview,
            datetime.now(UTC) + self.limits.review_ttl,
            reason=verdict.reason[:1000],
            source=info.source,
        )
        await self._audit_decided(
            command_id, info, display, argvs, verdict, digests, "held", ticket.id
        )
        await write(
            f"casemate: {verdict.reason} (rule {verdict.rule_id}): "
            f"waiting for approval (ticket {ticket.id})\n".encode()
        )
        if on_ticket is not None:
            await on_ticket(ticket)
        try:
            settled = await self.reviews.wait_async(
                ticket.id, self.limits.review_ttl.total_seconds() + 1
            )
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.reviews.cancel, ticket.id, info.user)
            raise
        released = False
        if settled.state is TicketState.APPROVED:
            released = await asyncio.to_thread(
                self.reviews.consume, ticket.id, digest, info.user, source=info.source
            )
        if not released:
            state = settled.state.value if settled.state is not TicketState.APPROVED else "used"
            reason = f"ticket {ticket.id} was {state}"
            if settled.decision_note:
                reason += f": {settled.decision_note}"
            await asyncio.to_thread(
                self._finish,
                command_id,
                info,
                display,
                "review",
                "refused",
                None,
                0.0,
                b"",
                0,
                "",
                False,
                approver=settled.decided_by,
            )
            await write(f"casemate: not run: {reason}\n".encode("utf-8", "replace"))
            return CommandResult(
                command_id,
                "review",
                EXIT_REFUSED,
                verdict.rule_id or "",
                reason,
                ticket.id,
                settled.decided_by,
            )
        await write(f"casemate: approved by {settled.decided_by} (ticket {ticket.id})\n".encode())
        return ticket.id, settled.decided_by

    async def _diff_preview(
        self,
        command: KubeCommand,
        program: str,
        named: Sequence[ResourceRef],
        preview: Sequence[str],
        environ: Mapping[str, str],
        env: WorkEnv,
    ) -> str:
        """A unified diff of the named objects now and after a server-side dry run of the
        command (deleted objects diff against nothing)."""
        ns = [f"--namespace={command.namespace}"] if command.namespace else []
        names = [f"{r.kind}/{r.name}" for r in named]
        timeout = self.limits.preview_timeout
        code, before = await _capture(
            [program, "get", *names, *ns, "--output=yaml"], env, timeout, environ=environ
        )
        if code != 0:
            return "(no preview: the objects cannot be read)\n" + before.decode("utf-8", "replace")
        after = b""
        if command.verb == "scale" and command.replicas is not None:
            # kubectl prints the object as read before scaling: show the change itself
            return _scale_diff(before, command.replicas)
        if command.verb != "delete":
            code, after = await _capture([program, *preview], env, timeout, environ=environ)
            if code != 0:
                return "(dry run failed)\n" + after.decode("utf-8", "replace")
        diff = difflib.unified_diff(
            before.decode("utf-8", "replace").splitlines(keepends=True),
            after.decode("utf-8", "replace").splitlines(keepends=True),
            "current",
            "after (server dry run)" if after else "after (deleted)",
        )
        text = "".join(diff)
        return text or "(the server reports no change)"

    async def _preview(self, command: KubeCommand, env: WorkEnv) -> str:
        """What the command would change, from the server (best effort, time-limited).

        Safe by construction: the argv is rebuilt from the parsed command
        (:func:`preview_argv`, never the user's words with flags appended), and it runs with
        the session's dry-run-only credential (:attr:`WorkEnv.preview_env`), for which the
        API proxy refuses every request that could change the cluster."""
        environ = env.preview_env
        if environ is None:
            return "(no preview: this session has no dry-run credential)"
        if "secrets" in command.kinds or command.needs_inspection:
            return "(no preview: Secret data is never shown, and a preview could show it)"
        built = preview_argv(command, PurePosixPath(str(env.workspace)))
        if isinstance(built, str):
            return f"(no preview: {built})"
        try:
            program = self.tools.program(command.tool)
            if command.verb == "apply":
                extra = {"KUBECTL_EXTERNAL_DIFF": shutil.which("diff") or "/usr/bin/diff"}
                code, out = await _capture(
                    [program, *built],
                    env,
                    self.limits.preview_timeout,
                    extra,
                    environ=environ,
                )
                text = out.decode("utf-8", "replace")
                return text if code in (0, 1) else f"(no preview: kubectl diff failed)\n{text}"
            named = [r for r in command.resources if r.name is not None]
            if named and command.verb in _DIFF_VERBS:
                return await self._diff_preview(command, program, named, built, environ, env)
            code, out = await _capture(
                [program, *built], env, self.limits.preview_timeout, environ=environ
            )
        except (OSError, ConfigError) as e:
            return f"(no preview: {e})"
        prefix = "server dry run:\n" if code == 0 else "(dry run failed)\n"
        return prefix + out.decode("utf-8", "replace")

    # -- running

    async def _execute(
        self,
        command_id: str,
        parsed: ParsedLine,
        info: SessionInfo,
        env: WorkEnv,
        display: str,
        verdict: Verdict,
        ticket_id: int,
        approver: str,
        write: Writer,
        secrets: Sequence[str],
        *,
        interactive: tuple[KubeCommand, PtyTerminal] | None = None,
    ) -> CommandResult:
        start = time.monotonic()
        redactor = Redactor(secrets)
        digest = hashlib.sha256()
        kept = bytearray()
        size = 0
        cap = 1024 * 1024

        def keep(clean: bytes) -> None:
            nonlocal size
            digest.update(clean)
            size += len(clean)
            if len(kept) < cap:
                kept.extend(clean[: cap - len(kept)])

        async def sink(chunk: bytes) -> None:
            clean = redactor.feed(chunk)
            if clean:
                keep(clean)
                await write(clean)

        redirect = parsed.redirect
        file_fd = -1
        file_redactor = Redactor(secrets)
        written = 0

        def to_file(clean: bytes) -> None:
            nonlocal written
            keep(clean)
            room = self.limits.max_redirect_bytes - written
            if clean[:room]:
                os.write(file_fd, clean[:room])
                written += len(clean[:room])
            if len(clean) > room:
                raise _OutputTooLarge

        async def file_sink(chunk: bytes) -> None:
            clean = file_redactor.feed(chunk)
            if clean:
                to_file(clean)

        outcome, code = "ran", -1
        try:
            if redirect is not None:
                # checked again: a review may have waited while the workspace changed
                target = check_redirect(redirect, env.workspace)
                mode = os.O_APPEND if redirect.append else os.O_TRUNC
                file_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | mode, 0o600)
            if interactive is not None:
                code = await self._on_pty(
                    command_id, parsed, info, env, interactive, secrets, redactor, keep, write
                )
            else:
                code = await asyncio.wait_for(
                    _pipeline(
                        [
                            [self.tools.program(stage.program), *stage.argv[1:]]
                            for stage in parsed.stages
                        ],
                        env,
                        sink,
                        self.limits.output_chunk,
                        out_sink=file_sink if redirect is not None else None,
                    ),
                    self.limits.timeout,
                )
            if redirect is not None and (rest := file_redactor.flush()):
                to_file(rest)
        except _OutputTooLarge:
            outcome, code = "failed", 1
            assert redirect is not None
            cap_bytes = self.limits.max_redirect_bytes
            limit = f"{cap_bytes // 2**20} MiB" if cap_bytes % 2**20 == 0 else f"{cap_bytes} bytes"
            await sink(
                f"casemate: {redirect.path}: the output passed {limit}; "
                f"stopped (the file holds the first {limit})\n".encode("utf-8", "replace")
            )
        except _Refused as e:
            outcome, code = "failed", EXIT_REFUSED
            await sink(f"casemate: {e.reason}\n".encode("utf-8", "replace"))
        except TimeoutError:
            outcome, code = "timeout", EXIT_TIMEOUT
            await sink(f"\ncasemate: stopped after {self.limits.timeout:.0f} s\n".encode())
        except asyncio.CancelledError:
            outcome, code = "interrupted", EXIT_INTERRUPTED
            self._finish(
                command_id,
                info,
                display,
                verdict.action.value,
                outcome,
                code,
                time.monotonic() - start,
                bytes(kept),
                size,
                digest.hexdigest(),
                size > len(kept),
                approver=approver,
            )
            raise
        except (OSError, ConfigError) as e:
            outcome, code = "failed", EXIT_REFUSED
            what = f"cannot write {redirect.path}" if file_fd < 0 and redirect else "cannot run"
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            await sink(f"casemate: {what}: {reason}\n".encode("utf-8", "replace"))
        finally:
            if file_fd >= 0:
                os.close(file_fd)
        rest = redactor.flush()
        if rest:
            keep(rest)
            await write(rest)
        sha = await asyncio.to_thread(
            self._finish,
            command_id,
            info,
            display,
            verdict.action.value,
            outcome,
            code,
            time.monotonic() - start,
            bytes(kept),
            size,
            digest.hexdigest(),
            size > len(kept),
            approver=approver,
        )
        return CommandResult(
            command_id,
            verdict.action.value,
            code,
            verdict.rule_id or "",
            verdict.reason,
            ticket_id,
            approver,
            sha,
            size,
        )

    async def _on_pty(
        self,
        command_id: str,
        parsed: ParsedLine,
        info: SessionInfo,
        env: WorkEnv,
        interactive: tuple[KubeCommand, PtyTerminal],
        secrets: Sequence[str],
        redactor: Redactor,
        keep: Callable[[bytes], None],
        write: Writer,
    ) -> int:
        """Run an approved interactive command on a pty (no command timeout: the session's
        lifetime bounds it); each line the user enters is audited as
        :class:`~casemate.events.ContainerInput` (best effort). Output held back by the masking
        of secrets is shown on the screen after :data:`IDLE_FLUSH` of quiet (an echo must not
        wait) while it is shorter than :data:`EARLY_FLUSH_MAX`; the audited copy of the output
        is masked by a stream of its own that never releases early (as the recording's)."""
        command, terminal = interactive
        lock = asyncio.Lock()
        later: asyncio.Task[None] | None = None
        kept = Redactor(secrets)

        # Held bytes shown early stay in the redactor (so a secret typed or printed slowly is
        # still recognised); ``ahead`` is what of its held tail the screen already shows.
        ahead = b""

        def after_shown(out: bytes) -> bytes:
            """What of the redactor's output the screen does not show yet."""
            nonlocal ahead
            if not ahead:
                return out
            same = 0
            for x, y in zip(out, ahead, strict=False):
                if x != y:
                    break
                same += 1
            # shown bytes that turned out to start a secret stay shown; the mask follows
            ahead = ahead[same:] if same == len(out) else b""
            return out[same:]

        async def flush_later() -> None:
            nonlocal ahead
            await asyncio.sleep(IDLE_FLUSH)
            async with lock:
                held = redactor.held
                if len(ahead) < len(held) < EARLY_FLUSH_MAX and held.startswith(ahead):
                    await write(held[len(ahead) :])
                    ahead = held

        async def pty_sink(chunk: bytes) -> None:
            nonlocal later
            if later is not None:
                later.cancel()
            terminal.shown(chunk)
            if clean := kept.feed(chunk):
                keep(clean)
            async with lock:
                if shown := after_shown(redactor.feed(chunk)):
                    await write(shown)
            if 0 < redactor.pending < EARLY_FLUSH_MAX:
                later = asyncio.ensure_future(flush_later())

        pod = next((r.name for r in command.resources if r.name), "") or ""

        async def audit_lines() -> None:
            while True:
                line, echo = await terminal.entered.get()
                event = ContainerInput(
                    actor=info.user,
                    source=info.source,
                    outcome="entered",
                    command_id=command_id,
                    session_id=info.session_id,
                    cluster=info.cluster,
                    namespace=command.namespace or info.namespace,
                    pod=pod,
                    container=command.flag("container") or "",
                    line=redactor.redact(line),
                    echo=redactor.redact(echo),
                )
                try:
                    await asyncio.to_thread(self.audit.append, event)
                except Exception as e:  # noqa: BLE001 - best effort, said in the docs
                    log.warning("bastion: a container input line was not audited: %s", e)

        auditor = asyncio.ensure_future(audit_lines())
        try:
            return await run_on_pty(
                [self.tools.program(parsed.first.program), *parsed.first.argv[1:]],
                cwd=env.workspace,
                environ=_spawn_env(env),
                terminal=terminal,
                sink=pty_sink,
                chunk=self.limits.output_chunk,
            )
        finally:
            if later is not None:
                later.cancel()
            if rest := kept.flush():
                keep(rest)
            if rest := after_shown(redactor.flush()):
                with contextlib.suppress(Exception):
                    await write(rest)
            # the lines entered up to the end are audited before the command's end
            for _ in range(500):
                if terminal.entered.empty() or auditor.done():
                    break
                await asyncio.sleep(0.01)
            auditor.cancel()
            with contextlib.suppress(BaseException):
                await auditor

    def _finish(
        self,
        command_id: str,
        info: SessionInfo,
        display: str,
        decision: str,
        outcome: str,
        code: int | None,
        duration: float,
        kept: bytes,
        size: int,
        sha: str,
        truncated: bool,
        *,
        approver: str = "",
    ) -> str:
        event = CommandFinished(
            actor=info.user,
            source=info.source,
            outcome=outcome,
            command_id=command_id,
            session_id=info.session_id,
            cluster=info.cluster,
            account=info.account,
            namespace=info.namespace,
            line=display,
            decision=decision,
            approver=approver,
            exit_code=code,
            duration=round(duration, 4),
            output=kept[:_AUDIT_OUTPUT_CHARS].decode("utf-8", "replace"),
            output_size=size,
            output_sha256=sha if size else "",
            output_truncated=truncated,
        )
        # the output and the record in one transaction (one commit)
        with self.artifacts.db.session() as s:
            stored = ""
            if size:
                stored = self.artifacts.put(kept, "output", digest=sha, size=size, session=s)
            self.audit.append(event, session=s)
        return stored


def _interactive(
    command: KubeCommand,
    parsed: ParsedLine,
    terminal: PtyTerminal | None,
    namespace: str,
    namespaces: Sequence[str],
) -> bool:
    """Whether ``command`` runs on the user's terminal (a pty); refuses ``-t`` where there is
    no terminal, or where its output would not reach one, and an interactive command into a
    namespace outside the grant (early: the API proxy refuses it anyway)."""
    tty = tty_requested(command)
    if wants_terminal(command) and namespaces and "*" not in namespaces:
        ns = command.namespace or namespace
        if ns not in namespaces:
            raise _Refused(
                f"namespace {ns!r} is outside your grant (namespaces: {', '.join(namespaces)})"
            )
    if tty and terminal is None:
        raise _Refused(
            f"kubectl {command.verb} -t needs an interactive terminal: use the web terminal, "
            "SSH with a terminal or 'casemate connect' (without -t, standard input is empty here)"
        )
    if terminal is None or not wants_terminal(command):
        return False
    if len(parsed.stages) > 1 or parsed.redirect is not None:
        if tty:
            raise _Refused(f"kubectl {command.verb} -t cannot be piped or redirected")
        return False
    return True


def _scale_diff(before: bytes, replicas: int) -> str:
    try:
        doc = yaml.safe_load(before)
    except yaml.YAMLError:
        return "(no preview: the objects cannot be read)"
    items = doc.get("items", [doc]) if isinstance(doc, dict) else []
    lines: list[str] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata") or {}
        spec = item.get("spec") or {}
        name = f"{item.get('kind', '?')}/{meta.get('name', '?') if isinstance(meta, dict) else '?'}"
        now = spec.get("replicas") if isinstance(spec, dict) else None
        lines += [
            f"--- {name} (current)",
            f"+++ {name} (after)",
            "@@ spec @@",
            f"-  replicas: {now}",
            f"+  replicas: {replicas}",
        ]
    return "\n".join(lines) + "\n" if lines else "(no preview: nothing to scale)"


# Processes ---------------------------------------------------------------------------------------


def _spawn_env(env: WorkEnv, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    merged = dict(env.env)
    if extra:
        merged.update(extra)
    return merged


async def _capture(
    argv: Sequence[str],
    env: WorkEnv,
    timeout: float,
    extra: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """Run one program in the session's environment (or ``environ``, e.g. the preview's);
    its combined output (at most 1 MiB)."""
    merged = _spawn_env(env, extra) if environ is None else {**environ, **(extra or {})}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=env.workspace,
        env=merged,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        _kill(proc.pid)
        await proc.wait()
        raise
    return proc.returncode or 0, out[: 1024 * 1024]


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _pipeline(
    stages: Sequence[Sequence[str]],
    env: WorkEnv,
    sink: Callable[[bytes], Awaitable[None]],
    chunk: int,
    *,
    out_sink: Callable[[bytes], Awaitable[None]] | None = None,
) -> int:
    """Run ``stages`` connected by pipes (no shell); stream the last stage's standard output
    (to ``out_sink`` if given) and every stage's standard error to ``sink``; the first failing
    stage's exit code, else the last's. Cancelling, or a sink raising, kills every stage."""
    err_r, err_w = os.pipe()
    procs: list[asyncio.subprocess.Process] = []
    previous: int | None = None
    loop = asyncio.get_running_loop()
    try:
        for index, argv in enumerate(stages):
            last = index == len(stages) - 1
            if last:
                out_r, out_w = -1, asyncio.subprocess.PIPE
            else:
                out_r, out_w = os.pipe()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=previous if previous is not None else asyncio.subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=err_w,
                    cwd=env.workspace,
                    env=_spawn_env(env),
                    start_new_session=True,
                )
            finally:
                if previous is not None:
                    os.close(previous)
                    previous = None
                if not last:
                    os.close(out_w)
            procs.append(proc)
            previous = None if last else out_r
        os.close(err_w)
        err_w = -1
        err_reader = asyncio.StreamReader(limit=chunk * 2)
        err_file = os.fdopen(err_r, "rb", buffering=0)
        err_r = -1
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(err_reader), err_file
        )
        out_stream = procs[-1].stdout
        assert out_stream is not None
        lock = asyncio.Lock()

        async def pump(
            reader: asyncio.StreamReader, to: Callable[[bytes], Awaitable[None]]
        ) -> None:
            while data := await reader.read(chunk):
                async with lock:
                    await to(data)

        try:
            await asyncio.gather(pump(out_stream, out_sink or sink), pump(err_reader, sink))
            codes = [await p.wait() for p in procs]
        finally:
            transport.close()
        for code in codes:
            if code != 0:
                return 128 - code if code < 0 else code
        return 0
    except BaseException:
        for p in procs:
            _kill(p.pid)
        for p in procs:
            with contextlib.suppress(Exception):
                await asyncio.shield(p.wait())
        raise
    finally:
        for fd in (err_r, err_w, previous if previous is not None else -1):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
