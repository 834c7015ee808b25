"""Running programs for the bastion with no shell: one program with its output captured, or a
pipeline of stages connected by pipes, each in its own process group so that a timeout, an
interruption or a failing reader kills every stage. :class:`Tools` names the programs a session
may run (kubectl, helm and the text filters), by absolute path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from casemate.bastion.filters import FILTERS
from casemate.bastion.redaction import Redactor
from casemate.bastion.workenv import WorkEnv
from casemate.errors import ConfigError

__all__ = [
    "OutputTooLarge",
    "RedirectFile",
    "Tools",
    "capture",
    "kill_group",
    "run_pipeline",
    "spawn_env",
]


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


class OutputTooLarge(Exception):  # a signal
    """A ``> FILE`` reached its cap."""


class RedirectFile:
    """A ``> FILE`` the gateway writes for a command: masked, at most ``cap`` bytes."""

    def __init__(self, secrets: Sequence[str], keep: Callable[[bytes], None], cap: int) -> None:
        self.fd = -1
        self.redactor = Redactor(secrets)
        self.keep = keep
        self.cap = cap
        self.written = 0

    def open(self, target: Path, append: bool) -> None:
        """Open ``target`` (checked by the caller) without following a symbolic link."""
        mode = os.O_APPEND if append else os.O_TRUNC
        self.fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | mode, 0o600)

    def put(self, clean: bytes) -> None:
        self.keep(clean)
        room = self.cap - self.written
        if clean[:room]:
            os.write(self.fd, clean[:room])
            self.written += len(clean[:room])
        if len(clean) > room:
            raise OutputTooLarge

    async def sink(self, chunk: bytes) -> None:
        clean = self.redactor.feed(chunk)
        if clean:
            self.put(clean)

    def flush(self) -> None:
        if rest := self.redactor.flush():
            self.put(rest)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def spawn_env(env: WorkEnv, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    merged = dict(env.env)
    if extra:
        merged.update(extra)
    return merged


async def capture(
    argv: Sequence[str],
    env: WorkEnv,
    timeout: float,
    extra: Mapping[str, str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """Run one program in the session's environment (or ``environ``, e.g. the preview's);
    its combined output (at most 1 MiB)."""
    merged = spawn_env(env, extra) if environ is None else {**environ, **(extra or {})}
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
        kill_group(proc.pid)
        await proc.wait()
        raise
    return proc.returncode or 0, out[: 1024 * 1024]


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_pipeline(
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
                    env=spawn_env(env),
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
            kill_group(p.pid)
        for p in procs:
            with contextlib.suppress(Exception):
                await asyncio.shield(p.wait())
        raise
    finally:
        for fd in (err_r, err_w, previous if previous is not None else -1):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
