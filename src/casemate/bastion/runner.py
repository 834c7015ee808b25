"""Running one command line of a bastion session: parse, decide, review, run, audit.

:meth:`CommandRunner.run` is the single path every command takes, whatever the channel
(``casemate exec``, the interactive shell over the web terminal, SSH or ``casemate connect``):

1. **Parse** the line with the restricted shell (:func:`~casemate.bastion.shell.parse_line`) and
   the first stage with the kubectl/helm tables (:func:`~casemate.bastion.kubectl.parse_command`)
   with every local path checked against the workspace, lexically and then with symbolic links
   resolved (:func:`~casemate.bastion.inspection.check_real_paths`).
2. **Inspect** (:mod:`casemate.bastion.inspection`) the manifests it reads (``-f``/``-k`` files
   and directories, a helm chart in the workspace rendered with ``helm template``): the kinds,
   names and namespaces found feed the policy, and every file is stored by content
   (:class:`~casemate.bastion.artifacts.ArtifactStore`); a manifest that cannot be read leaves
   the kinds unknown, and the policy then assumes the worst.
3. **Decide** with the command policy (:func:`~casemate.bastion.policy.decide`). ``reject``:
   refused with the rule and reason. ``warn``: the warnings are shown and the command runs.
   ``review``: the command is held as a ticket bound to its hash (argv, filters, cluster,
   account, namespace, user, digests of the files it reads) with a preview of what it would
   change (a server-side dry run: :mod:`casemate.bastion.preview`), the user sees ``waiting for
   approval (ticket N)``, and the command runs only after an approver approved it and
   :meth:`ReviewService.consume <casemate.bastion.review.ReviewService.consume>` released it,
   once.
4. **Audit before**: a :class:`~casemate.events.CommandDecided` record is committed before
   anything runs (and for every refusal).
5. **Run** the pipeline with no shell (:mod:`casemate.bastion.pipeline`): each stage is the real
   program (kubectl, helm, the GNU text tools, jq) started with its argv, the stages connected
   by pipes, the working directory the workspace, the environment the session's
   (:class:`~casemate.bastion.workenv.WorkEnv`), standard input empty. Output (standard output
   of the last stage and standard error of all) is streamed to the user with every secret the
   caller names masked, whatever the chunking. A line ending in ``> FILE`` or ``>> FILE`` sends
   the standard output into that file instead: the path must lie inside the workspace
   (lexically, and again with symbolic links resolved; the file is opened without following a
   link), the gateway writes it (mode 0600, masked the same way, at most
   :attr:`RunnerLimits.max_redirect_bytes`), and the audit record still holds the output. An
   approved interactive command (``kubectl exec -it``, ``attach -it``, ``run -it``, ``debug
   -it``) on a channel with a terminal runs instead on a pty with the user's keystrokes as its
   input (:mod:`casemate.bastion.ptyrun`); without a terminal, ``-t`` is refused.
6. **Audit after**: :class:`~casemate.events.CommandFinished` with the exit code, duration,
   approver, the first bytes of the output and the digest and size of all of it; the output
   itself (capped) is stored by content.

Every step receives one frozen :class:`CommandContext` (the session, the line as shown, the
writer, the secrets; once parsed, the stages, the inspected first stage, the manifests' digests,
the namespace, the terminal) and records an end as a :class:`CommandEnd`.

Exit codes: the pipeline's (the first failing stage's, else the last's), and
:data:`EXIT_REFUSED` (126) for a refused or unapproved command, :data:`EXIT_TIMEOUT` (124),
:data:`EXIT_INTERRUPTED` (130).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets as _secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Final

from casemate.bastion.artifacts import MAX_MANIFEST_BYTES, ArtifactStore
from casemate.bastion.inspection import (
    RunRefused,
    check_real_paths,
    check_redirect,
    inspect_manifests,
    interactive,
    manifest_refs,
    manifest_risks,
)
from casemate.bastion.kubectl import CommandRefused, KubeCommand, parse_command
from casemate.bastion.pipeline import OutputTooLarge, RedirectFile, Tools, run_pipeline, spawn_env
from casemate.bastion.policy import CommandAction, CommandVerdict, Context, Policy, decide
from casemate.bastion.preview import preview
from casemate.bastion.ptyrun import (
    EARLY_FLUSH_MAX,
    IDLE_FLUSH,
    ApiRelease,
    PtyTerminal,
    api_release,
    run_on_pty,
)
from casemate.bastion.redaction import Redactor
from casemate.bastion.review import ReviewService, Ticket, TicketState, command_hash
from casemate.bastion.shell import ParsedLine, ShellRefused, parse_line
from casemate.bastion.workenv import WorkEnv
from casemate.core.audit import AuditLog
from casemate.errors import CasemateError, ConfigError
from casemate.events import CommandDecided, CommandFinished, ContainerInput

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "CommandContext",
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
_KEPT_OUTPUT_BYTES: Final = 1024 * 1024

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


@dataclass(frozen=True)
class CommandContext:
    """One command line on its way through :meth:`CommandRunner.run`: who runs it where, how
    it is shown, where its output goes and what is masked in it; once the line parsed, its
    stages, its first stage as inspected, the manifests it reads and the namespace it acts
    in. Each step gets this one object (a new copy, with :func:`dataclasses.replace`, as more
    becomes known)."""

    command_id: str
    info: SessionInfo
    env: WorkEnv
    display: str  # the line as shown and audited: secrets masked, NULs visible, capped
    write: Writer
    secrets: tuple[str, ...] = ()
    parsed: ParsedLine | None = None  # None: the shell refused the line
    first: KubeCommand | None = None  # the first stage, with the kinds of its manifests
    digests: tuple[str, ...] = ()  # the stored manifests it reads
    namespace: str = ""  # where it acts (its -n, else the session's)
    terminal: PtyTerminal | None = None  # set when it runs on the user's terminal (a pty)

    @property
    def argvs(self) -> tuple[tuple[str, ...], ...]:
        if self.parsed is None:
            return ()
        return tuple(tuple(stage.argv) for stage in self.parsed.stages)

    def audit_fields(self) -> dict[str, str]:
        """What the records of this command share: who, where, which line."""
        info = self.info
        return {
            "actor": info.user,
            "source": info.source,
            "command_id": self.command_id,
            "session_id": info.session_id,
            "cluster": info.cluster,
            "account": info.account,
            "namespace": info.namespace,
            "line": self.display,
        }

    def mask(self, text: str) -> str:
        """``text`` with the secrets masked (a whole string: titles, previews, input lines)."""
        return Redactor(self.secrets).redact(text)


@dataclass(frozen=True)
class CommandEnd:
    """How a command ended, for its :class:`~casemate.events.CommandFinished` record."""

    decision: str
    outcome: str  # ran, failed, timeout, interrupted, refused
    exit_code: int | None
    duration: float = 0.0
    approver: str = ""
    kept: bytes = b""  # the (masked) output kept, at most 1 MiB
    size: int = 0  # of all the output
    sha256: str = ""  # of all the output

    @property
    def truncated(self) -> bool:
        return self.size > len(self.kept)


class _Output:
    """The masked output of a command as it passes: its digest and size, its first bytes."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.kept = bytearray()
        self.size = 0

    def keep(self, clean: bytes) -> None:
        self.digest.update(clean)
        self.size += len(clean)
        if len(self.kept) < _KEPT_OUTPUT_BYTES:
            self.kept.extend(clean[: _KEPT_OUTPUT_BYTES - len(self.kept)])

    def end(
        self, verdict: CommandVerdict, outcome: str, code: int, start: float, approver: str
    ) -> CommandEnd:
        return CommandEnd(
            verdict.action.value,
            outcome,
            code,
            time.monotonic() - start,
            approver,
            bytes(self.kept),
            self.size,
            self.digest.hexdigest(),
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
        secret_list = tuple(s for s in secrets if s)
        ctx = CommandContext(
            command_id="cmd_" + _secrets.token_hex(8),
            info=info,
            env=env,
            display=Redactor(secret_list).redact(line.replace("\x00", "\\0"))[:4000],
            write=write,
            secrets=secret_list,
        )
        try:
            parsed = parse_line(line)
        except ShellRefused as e:
            return await self._refuse(ctx, e.reason)
        except CasemateError as e:
            return await self._refuse(ctx, e.message)
        ctx = replace(ctx, parsed=parsed)
        try:
            workspace = PurePosixPath(str(env.workspace))
            first = parse_command(parsed.first.argv, workspace=workspace)
            real = check_real_paths(first, env.workspace)
            if parsed.redirect is not None:
                check_redirect(parsed.redirect, env.workspace)
            first, digests = await inspect_manifests(
                first,
                real,
                env,
                artifacts=self.artifacts,
                helm=self.tools.helm,
                max_bytes=self.limits.max_manifest_bytes,
                timeout=self.limits.inspect_timeout,
            )
            on_pty = interactive(first, parsed, terminal, info.namespace, info.namespaces)
        except (CommandRefused, RunRefused) as e:
            return await self._refuse(ctx, e.reason)
        ctx = replace(
            ctx,
            first=first,
            digests=tuple(digests),
            namespace=first.namespace or info.namespace,
            terminal=terminal if on_pty else None,
        )
        policy_ctx = Context(
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
            return await self._refuse(replace(ctx, digests=()), "no command policy could be loaded")
        verdict = decide(parsed, policy_ctx, policy, first=first)
        for notice in verdict.warnings:
            await write(f"casemate: warning: {notice.reason} (rule {notice.rule_id})\n".encode())
        if verdict.action == CommandAction.REJECT:
            return await self._refuse(ctx, verdict.reason, verdict.rule_id or "")
        ticket_id, approver = 0, ""
        if verdict.action == CommandAction.REVIEW:
            held = await self._hold(ctx, verdict, on_ticket)
            if isinstance(held, CommandResult):
                return held
            ticket_id, approver = held
        else:
            await self._audit_decided(ctx, verdict, "allowed")
        if on_release is not None and ticket_id:
            on_release(api_release(first, ctx.namespace))
        try:
            return await self._execute(ctx, verdict, ticket_id, approver)
        finally:
            if on_release is not None and ticket_id:
                on_release(None)

    # -- refusals and audit

    async def _refuse(self, ctx: CommandContext, reason: str, rule_id: str = "") -> CommandResult:
        verdict = CommandVerdict(CommandAction.REJECT, rule_id or "shell.refused", reason)
        await self._audit_decided(ctx, verdict, "denied")
        rule = f" (rule {rule_id})" if rule_id else ""
        await ctx.write(f"casemate: refused: {reason}{rule}\n".encode("utf-8", "replace"))
        return CommandResult(ctx.command_id, "reject", EXIT_REFUSED, rule_id, reason)

    async def _audit_decided(
        self, ctx: CommandContext, verdict: CommandVerdict, outcome: str, ticket_id: int = 0
    ) -> None:
        argvs = ctx.argvs
        event = CommandDecided(
            **ctx.audit_fields(),
            outcome=outcome,
            argv=tuple(tuple(a[:2000] for a in stage) for stage in argvs)
            if outcome != "denied" or argvs
            else (),
            decision=verdict.action.value,
            rule_id=verdict.rule_id or "",
            reason=verdict.reason[:1000],
            warnings=tuple(n.rule_id for n in verdict.warnings),
            ticket_id=ticket_id,
            manifests=ctx.digests,
        )
        # committed before the command runs; off the event loop (an fsync)
        await asyncio.to_thread(self.audit.append, event)

    # -- review

    async def _hold(
        self,
        ctx: CommandContext,
        verdict: CommandVerdict,
        on_ticket: Callable[[Ticket], Awaitable[None]] | None,
    ) -> CommandResult | tuple[int, str]:
        parsed, first, info = ctx.parsed, ctx.first, ctx.info
        assert parsed is not None and first is not None  # a decided command parsed
        files = {str(p): d for p, d in zip(first.files, ctx.digests, strict=False)}
        digest = command_hash(
            parsed.first.argv,
            cluster=info.cluster,
            account=info.account,
            namespace=ctx.namespace,
            user=info.user,
            workspace_files=files,
            filters=[stage.argv for stage in parsed.filters],
        )
        shown = ctx.mask(await preview(first, ctx.env, self.tools, self.limits.preview_timeout))
        ticket = await asyncio.to_thread(
            self.reviews.submit,
            info.user,
            digest,
            ctx.display,
            info.cluster,
            info.account,
            ctx.namespace,
            verdict.rule_id or "",
            shown,
            datetime.now(UTC) + self.limits.review_ttl,
            reason=verdict.reason[:1000],
            source=info.source,
        )
        await self._audit_decided(ctx, verdict, "held", ticket.id)
        await ctx.write(
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
            end = CommandEnd("review", "refused", None, approver=settled.decided_by)
            await asyncio.to_thread(self._finish, ctx, end)
            await ctx.write(f"casemate: not run: {reason}\n".encode("utf-8", "replace"))
            return CommandResult(
                ctx.command_id,
                "review",
                EXIT_REFUSED,
                verdict.rule_id or "",
                reason,
                ticket.id,
                settled.decided_by,
            )
        await ctx.write(
            f"casemate: approved by {settled.decided_by} (ticket {ticket.id})\n".encode()
        )
        return ticket.id, settled.decided_by

    # -- running

    async def _execute(
        self, ctx: CommandContext, verdict: CommandVerdict, ticket_id: int, approver: str
    ) -> CommandResult:
        parsed, write = ctx.parsed, ctx.write
        assert parsed is not None  # a decided command parsed
        start = time.monotonic()
        redactor = Redactor(ctx.secrets)
        output = _Output()

        async def sink(chunk: bytes) -> None:
            clean = redactor.feed(chunk)
            if clean:
                output.keep(clean)
                await write(clean)

        redirect = parsed.redirect
        file = RedirectFile(ctx.secrets, output.keep, self.limits.max_redirect_bytes)
        outcome, code = "ran", -1
        try:
            if redirect is not None:
                # checked again: a review may have waited while the workspace changed
                file.open(check_redirect(redirect, ctx.env.workspace), redirect.append)
            if ctx.terminal is not None:
                code = await self._on_pty(ctx, redactor, output.keep)
            else:
                code = await asyncio.wait_for(
                    run_pipeline(
                        [
                            [self.tools.program(stage.program), *stage.argv[1:]]
                            for stage in parsed.stages
                        ],
                        ctx.env,
                        sink,
                        self.limits.output_chunk,
                        out_sink=file.sink if redirect is not None else None,
                    ),
                    self.limits.timeout,
                )
            if redirect is not None:
                file.flush()
        except OutputTooLarge:
            outcome, code = "failed", 1
            assert redirect is not None
            cap_bytes = self.limits.max_redirect_bytes
            limit = f"{cap_bytes // 2**20} MiB" if cap_bytes % 2**20 == 0 else f"{cap_bytes} bytes"
            await sink(
                f"casemate: {redirect.path}: the output passed {limit}; "
                f"stopped (the file holds the first {limit})\n".encode("utf-8", "replace")
            )
        except RunRefused as e:
            outcome, code = "failed", EXIT_REFUSED
            await sink(f"casemate: {e.reason}\n".encode("utf-8", "replace"))
        except TimeoutError:
            outcome, code = "timeout", EXIT_TIMEOUT
            await sink(f"\ncasemate: stopped after {self.limits.timeout:.0f} s\n".encode())
        except asyncio.CancelledError:
            outcome, code = "interrupted", EXIT_INTERRUPTED
            self._finish(ctx, output.end(verdict, outcome, code, start, approver))
            raise
        except (OSError, ConfigError) as e:
            outcome, code = "failed", EXIT_REFUSED
            what = f"cannot write {redirect.path}" if file.fd < 0 and redirect else "cannot run"
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            await sink(f"casemate: {what}: {reason}\n".encode("utf-8", "replace"))
        finally:
            file.close()
        rest = redactor.flush()
        if rest:
            output.keep(rest)
            await write(rest)
        end = output.end(verdict, outcome, code, start, approver)
        sha = await asyncio.to_thread(self._finish, ctx, end)
        return CommandResult(
            ctx.command_id,
            verdict.action.value,
            code,
            verdict.rule_id or "",
            verdict.reason,
            ticket_id,
            approver,
            sha,
            end.size,
        )

    async def _on_pty(
        self, ctx: CommandContext, redactor: Redactor, keep: Callable[[bytes], None]
    ) -> int:
        """Run an approved interactive command on a pty (no command timeout: the session's
        lifetime bounds it); each line the user enters is audited as
        :class:`~casemate.events.ContainerInput` (best effort). Output held back by the masking
        of secrets is shown on the screen after :data:`IDLE_FLUSH` of quiet (an echo must not
        wait) while it is shorter than :data:`EARLY_FLUSH_MAX`; the audited copy of the output
        is masked by a stream of its own that never releases early (as the recording's)."""
        command, terminal, parsed, info = ctx.first, ctx.terminal, ctx.parsed, ctx.info
        assert command is not None and terminal is not None and parsed is not None
        write = ctx.write
        lock = asyncio.Lock()
        later: asyncio.Task[None] | None = None
        kept = Redactor(ctx.secrets)

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
                    command_id=ctx.command_id,
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
                except Exception as e:  # best effort, said in the docs
                    log.warning("bastion: a container input line was not audited: %s", e)

        auditor = asyncio.ensure_future(audit_lines())
        try:
            return await run_on_pty(
                [self.tools.program(parsed.first.program), *parsed.first.argv[1:]],
                cwd=ctx.env.workspace,
                environ=spawn_env(ctx.env),
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

    def _finish(self, ctx: CommandContext, end: CommandEnd) -> str:
        event = CommandFinished(
            **ctx.audit_fields(),
            outcome=end.outcome,
            decision=end.decision,
            approver=end.approver,
            exit_code=end.exit_code,
            duration=round(end.duration, 4),
            output=end.kept[:_AUDIT_OUTPUT_CHARS].decode("utf-8", "replace"),
            output_size=end.size,
            output_sha256=end.sha256 if end.size else "",
            output_truncated=end.truncated,
        )
        # the output and the record in one transaction (one commit)
        with self.artifacts.db.session() as s:
            stored = ""
            if end.size:
                stored = self.artifacts.put(
                    end.kept, "output", digest=end.sha256, size=end.size, session=s
                )
            self.audit.append(event, session=s)
        return stored
