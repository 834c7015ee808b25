"""``casemate admission serve``: the posture admission webhook over TLS.

Register it with a ValidatingWebhookConfiguration (see docs/posture.md): its ``caBundle`` is
the CA that signed ``--cert``, its URL ``https://HOST:PORT/validate``. ``failurePolicy: Fail``
refuses everything the rules cover while the webhook is down or overloaded (fail closed);
``Ignore`` admits it unchecked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from casemate.cli.common import DataDirOption, err, runtime
from casemate.cli.posture import (
    PolicyOption,
    SignaturePolicyOption,
    load_policy_files,
    signature_settings,
)
from casemate.errors import CasemateError, InvalidInput
from casemate.posture.admission import AdmissionPolicy
from casemate.posture.exceptions import PostureException
from casemate.posture.model import Settings

if TYPE_CHECKING:
    import uvicorn

app = typer.Typer(help="The posture admission webhook.", no_args_is_help=True)

Patterns = Annotated[list[str] | None, typer.Option(help="Rule ids or globs; repeatable.")]


@app.command("serve")
def serve(
    cert: Annotated[Path, typer.Option("--cert", help="TLS certificate chain (PEM).")],
    key: Annotated[Path, typer.Option("--key", help="TLS private key (PEM).")],
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")] = (
        "127.0.0.1:8443"
    ),
    enforce: Patterns = None,
    warn: Patterns = None,
    audit: Patterns = None,
    policies: PolicyOption = None,
    signature_policy: SignaturePolicyOption = None,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", help="Answer 503 beyond this many requests.")
    ] = 200,
    use_exceptions: Annotated[
        bool,
        typer.Option(
            "--exceptions",
            help="Honour the posture exceptions stored in Casemate (re-read every "
            "--exceptions-refresh seconds, never in a request).",
        ),
    ] = False,
    refresh: Annotated[
        float, typer.Option("--exceptions-refresh", help="Seconds between re-reads.")
    ] = 10.0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Processes answering on the one listening socket (--max-in-flight is per "
            "process).",
        ),
    ] = 1,
    data_dir: DataDirOption = None,
) -> None:
    """Answer AdmissionReview v1 requests with the posture rules (enforce / warn / audit).

    With no --enforce/--warn/--audit: enforce the Pod Security Standards baseline and the
    --policy rules (and images.signature with --signature-policy), and warn about every other
    object rule."""
    import uvicorn

    from casemate.posture.webhook import http_protocol, webhook_app

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(f"--listen {listen!r} is not HOST:PORT")
    for path in (cert, key):
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file")
    if not 1 <= workers <= 64:
        raise InvalidInput("--workers must be between 1 and 64")
    custom = load_policy_files(policies or [])
    settings = Settings(signatures=signature_settings(signature_policy))
    policy = AdmissionPolicy.build(
        enforce or (), warn or (), audit or (), settings=settings, custom=custom
    )
    counts = {
        m: sum(1 for v in policy.modes.values() if v == m) for m in ("enforce", "warn", "audit")
    }
    err.print(
        f"casemate admission: https://{listen}/validate "
        f"({counts['enforce']} rules enforced, {counts['warn']} warned, {counts['audit']} audited)",
        markup=False,
    )

    def config(snapshot: Callable[[], Sequence[PostureException]]) -> uvicorn.Config:
        return uvicorn.Config(
            webhook_app(policy, exceptions=snapshot),
            http=http_protocol(),
            host=host.strip("[]"),
            port=int(port),
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            limit_concurrency=max_in_flight,
            timeout_keep_alive=30,
            log_level="warning",
        )

    if workers == 1:
        snapshot = _exception_snapshot(data_dir, refresh) if use_exceptions else tuple
        uvicorn.Server(config(snapshot)).run()
        return
    _prefork(workers, lambda: config(_exception_snapshot(data_dir, refresh) if use_exceptions
                                     else tuple))  # fmt: skip


def _prefork(workers: int, make: Callable[[], uvicorn.Config]) -> None:
    """Bind the socket once, then fork ``workers`` processes that accept on it, each with its
    own event loop (and its own exceptions snapshot thread, started after the fork). The parent
    only waits: SIGTERM or SIGINT is passed on to the workers, and when one worker ends the
    others are stopped, so a supervisor sees the failure."""
    import os
    import signal

    import uvicorn

    sock = make().bind_socket()
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # a worker
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                uvicorn.Server(make()).run(sockets=[sock])
            except BaseException:  # the worker ends here, never in the parent's code
                code = 1
            os._exit(code)
        children.append(pid)
    sock.close()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    pid, status = os.wait()
    forward(signal.SIGTERM, None)
    for child in children:
        if child != pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, 0)
    # uvicorn ends a worker by re-raising the SIGTERM it was stopped with: that is a clean stop
    if os.waitstatus_to_exitcode(status) not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise typer.Exit(1)


def _exception_snapshot(
    data_dir: Path | None, refresh: float
) -> Callable[[], Sequence[PostureException]]:
    """The stored exceptions, read now and then every ``refresh`` seconds by a daemon thread;
    a failed re-read keeps the last snapshot (expired exceptions stop applying on their own,
    since each is checked against the clock at every review)."""
    import threading
    import time

    from casemate.posture.exception_store import ExceptionStore

    if refresh < 1:
        raise InvalidInput("--exceptions-refresh must be at least 1 second")
    rt = runtime(data_dir)
    store = ExceptionStore(rt.db, rt.audit)
    current: list[Sequence[PostureException]] = [tuple(store.all(actor="casemate admission"))]

    def reread() -> None:
        while True:
            time.sleep(refresh)
            try:
                current[0] = tuple(store.all(actor="casemate admission"))
            except CasemateError as e:
                err.print(f"posture exceptions not re-read: {e.message}", markup=False)

    threading.Thread(target=reread, daemon=True, name="posture-exceptions").start()
    err.print(f"{len(current[0])} posture exceptions stored", markup=False)
    return lambda: current[0]
