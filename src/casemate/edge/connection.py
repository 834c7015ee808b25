"""One client connection of the edge proxy: read a request, have it decided and audited, then
answer or forward it (:mod:`casemate.edge.relay`). See :mod:`casemate.edge.proxy`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import logging
import re
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from casemate.edge.auditing import (
    audit_failure_cause,
    call_outcome,
    new_call_id,
)
from casemate.edge.authorize import CallOutcome, Evaluation
from casemate.edge.dockerapi import (
    LAST_CHUNK,
    BodyEnd,
    Closed,
    DockerRequest,
    ReaderEvent,
    RequestReader,
    RequestReady,
    docker_error,
    encode_chunk,
    upstream_body,
    upstream_head,
)
from casemate.edge.dockerfacts import close_writer, describe_os_error
from casemate.edge.refusal import EdgeRefused
from casemate.edge.relay import READ_SIZE, ClientGone, Pipelined, Relay, error_for
from casemate.edge.target import Query
from casemate.errors import CasemateError, UpstreamError
from casemate.events import DockerCallDecided, DockerCallFinished, DockerPullVerified
from casemate.risks.imageref import ImageRef, parse_image_ref
from casemate.wire.response import ResponseError, ResponseReader

if TYPE_CHECKING:
    from casemate.edge.proxy import EdgeProxy


log = logging.getLogger(__name__)


def _stream_error(line: bytes) -> bool:
    """A line of dockerd's JSON progress stream that reports an error."""
    line = line.strip()
    if not line.startswith(b"{"):
        return False
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    return isinstance(doc, dict) and ("error" in doc or "errorDetail" in doc)


_TOKEN_LIKE: Final = re.compile(r"cm[a-z]_[A-Za-z0-9_-]{4,}")


def redact(text: str, secret: str | None) -> str:
    """``text`` without the caller's token (or anything shaped like a Casemate secret)."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "<redacted>")
    return _TOKEN_LIKE.sub("<redacted>", text)


@dataclass
class Exchange:
    """State of one request on a connection."""

    reader: RequestReader
    events: deque[ReaderEvent] = field(default_factory=deque)
    request: DockerRequest | None = None
    body_done: bool = False


class Connection:
    def __init__(
        self, proxy: EdgeProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.config = proxy.config
        self.reader = reader
        self.writer = writer
        self.uid = -1
        self.pid = 0
        self.sent_anything = False
        self.token: str | None = None
        self.forwarded = False
        """The current request was (at least partly) written to dockerd."""
        self.upstream_status = 0
        """dockerd's status for the current request (101 for a hijack; 0: none yet)."""

    # Entry -------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            self.pid, self.uid = _peer_credentials(self.writer)
        except OSError as e:
            log.warning("edge proxy: no peer credentials (%s); closing", describe_os_error(e))
            return
        leftover = b""
        try:
            while True:
                keep_alive, leftover = await self._one(leftover)
                if not keep_alive:
                    return
        except (ConnectionError, ClientGone):
            log.debug("edge proxy: client uid %d went away", self.uid)
        except Pipelined:
            log.info("edge proxy: uid %d sent bytes before its response was complete", self.uid)
        except Exception as e:
            log.error(
                "edge proxy: connection of uid %d failed: %s",
                self.uid,
                redact(f"{type(e).__name__}: {e}", self.token),
                exc_info=not isinstance(e, CasemateError),
            )
            if not self.sent_anything:
                with contextlib.suppress(Exception):
                    await self._send(
                        docker_error(500, "casemate: internal error in the edge proxy")
                    )
                    await self._linger()

    async def _read_client(self) -> bytes:
        try:
            async with asyncio.timeout(self.config.idle_timeout):
                return await self.reader.read(READ_SIZE)
        except TimeoutError:
            raise ClientGone from None

    async def _send(self, data: bytes) -> None:
        self.sent_anything = True
        self.writer.write(data)
        await self.writer.drain()

    async def _linger(self) -> None:
        """Half-close, then drain what the client still sends (bounded), so that it reads our
        answer instead of failing on a write."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
            async with asyncio.timeout(self.config.linger):
                while await self.reader.read(READ_SIZE):
                    pass

    # One request -------------------------------------------------------------------------------

    async def _one(self, leftover: bytes) -> tuple[bool, bytes]:
        """Serve one request; returns (keep the connection, bytes of the next request)."""
        self.sent_anything = False
        ex = Exchange(RequestReader(self.config.limits))
        continued = False
        data = leftover
        while ex.request is None:
            if not data:
                data = await self._read_client()
            try:
                events = ex.reader.feed(data)
            except EdgeRefused as e:
                self.token = self._token(ex)
                await self._refuse(e)
                return False, b""
            data = b""
            for event in events:
                if isinstance(event, Closed):
                    return False, b""
                if isinstance(event, RequestReady) and ex.request is None:
                    ex.request = event.request
                elif ex.request is not None:
                    ex.events.append(event)
            head = ex.reader.head
            if ex.request is None and head is not None and head.expects_continue and not continued:
                continued = True
                await self._send(b"HTTP/1.1 100 Continue\r\n\r\n")
        request = ex.request
        self.token = self._token(ex)
        ex.body_done = not request.is_stream or any(isinstance(e, BodyEnd) for e in ex.events)
        return await self._handle(ex, request)

    def _token(self, ex: Exchange) -> str | None:
        """The caller's token, from the head the reader scanned (None before it is complete)."""
        head = ex.reader.head
        return None if head is None else head.get(self.config.token_header_lower)

    async def _refuse(self, e: EdgeRefused) -> None:
        reason = redact(e.message, self.token)
        caller = self.proxy.caller_for(self.uid)
        log.info(
            "edge proxy: refused a request from %s (uid %d): %s", caller.username, self.uid, reason
        )
        event = DockerCallDecided(
            actor=caller.username,
            source=f"uid:{self.uid}",
            outcome="denied",
            user=caller.username,
            uid=self.uid,
            role=caller.role.value,
            allowed=False,
            reason=reason,
            code=e.code.value,
        )
        try:
            await self.proxy.record(event)
        except Exception as err:
            log.error("edge proxy: could not audit a refusal: %s", err)
        await self._send(docker_error(e.status, f"casemate: {reason} [{e.code.value}]"))
        await self._linger()

    async def _handle(self, ex: Exchange, request: DockerRequest) -> tuple[bool, bytes]:
        try:
            evaluation = await self.proxy.evaluate(request, self.uid, self.token)
            outcome = await self.proxy.authorize(evaluation)
        except UpstreamError as e:
            return await self._fail(ex, request, 502, f"casemate: {e.message}", "upstream")
        call_id = new_call_id() if outcome.allowed and not request.action.read_only else ""
        event = self._event(evaluation, outcome, call_id)
        # Connecting to dockerd sends nothing, so it may overlap the audit commit; the
        # request itself is written only once the record is committed.
        connecting = self.proxy.docker.connect_soon() if outcome.allowed else None
        try:
            decided = await self.proxy.record(event)
        except Exception as e:
            cause = audit_failure_cause(e)
            log.error("edge proxy: cannot write the audit record (%s): %s", cause, e)
            await _discard_connection(connecting)
            message = (
                f"casemate: the audit record cannot be written ({cause}); nothing was done "
                "[audit_failed]"
            )
            return await self._fail(ex, request, 503, message, "audit_failed")
        except BaseException:
            await _discard_connection(connecting)
            raise
        log.log(
            logging.DEBUG if outcome.allowed else logging.INFO,
            "edge proxy: %s %s by %s (uid %d): %s [%s]",
            "allowed" if outcome.allowed else "denied",
            request.action.value,
            evaluation.caller.username,
            self.uid,
            outcome.reason,
            outcome.code,
        )
        if not outcome.allowed:
            keep = ex.body_done and request.keep_alive and request.method != "HEAD"
            await self._send(error_for(request, outcome.status, outcome.message, keep))
            if not keep:
                await self._linger()
            return keep, b""
        assert connecting is not None
        self.forwarded, self.upstream_status = False, 0
        started = time.monotonic()
        try:
            if evaluation.pull_digest is not None:
                return await self._pull_by_digest(ex, request, evaluation.pull_digest, connecting)
            return await self._forward(ex, request, connecting)
        finally:
            if call_id:
                await self.proxy.record_outcome(
                    self._finished(event, decided.seq, time.monotonic() - started)
                )

    def _finished(
        self, decided: DockerCallDecided, seq: int, duration: float
    ) -> DockerCallFinished:
        word, reason = call_outcome(forwarded=self.forwarded, status=self.upstream_status)
        return DockerCallFinished(
            actor=decided.actor,
            source=decided.source,
            outcome=word,
            call_id=decided.call_id,
            decided_seq=seq,
            user=decided.user,
            uid=decided.uid,
            method=decided.method,
            path=decided.path,
            action=decided.action,
            container=decided.container,
            status=self.upstream_status,
            duration_ms=round(duration * 1000),
            reason=reason,
        )

    async def _pull_by_digest(
        self,
        ex: Exchange,
        request: DockerRequest,
        digest: str,
        connecting: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> tuple[bool, bytes]:
        """A pull by tag, as decided: dockerd pulls the digest the registry named (content
        addressed, so nothing else can arrive), then the proxy tags it and checks the tag
        before the client's answer ends. The progress stream is relayed as it comes."""
        ref = parse_image_ref(request.param("image") or "")
        assert ref.tag is not None
        items = [(k, v) for k, v in request.query.items if k not in ("fromImage", "tag")]
        pinned = dataclasses.replace(
            request, query=Query((("fromImage", ref.name), ("tag", digest), *items))
        )
        try:
            up_r, up_w = await connecting
        except UpstreamError as e:
            await self._send(error_for(request, 502, f"casemate: {e.message}", False))
            await self._linger()
            return False, b""
        try:
            self.forwarded = True
            up_w.write(upstream_head(pinned) + upstream_body(pinned))
            await up_w.drain()
            response = ResponseReader(pinned.method)
            status = 0
            failed = False
            pending = b""
            while True:
                data = await up_r.read(READ_SIZE)
                response.feed(data)
                if not status:
                    if not response.head():
                        if not data:
                            raise ResponseError("dockerd closed the connection without answering")
                        continue
                    status = self.upstream_status = response.status
                    await self._send(
                        f"HTTP/1.1 {status} {response.reason.decode('latin-1') or 'OK'}\r\n"
                        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                        "Connection: close\r\n\r\n".encode("latin-1")
                    )
                chunks, ended = response.body()
                for chunk in chunks:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    failed = failed or any(_stream_error(line) for line in lines)
                    await self._send(encode_chunk(chunk))
                if ended or not data:
                    break
            failed = failed or _stream_error(pending) or status != 200
        except (OSError, ResponseError) as e:
            log.warning("edge proxy: pull of %s@%s broke off: %s", ref.name, digest, e)
            if not self.sent_anything:
                await self._send(error_for(request, 502, "casemate: dockerd failed", False))
            return False, b""
        finally:
            await close_writer(up_w)
        if not failed:
            ok, message, image_id = await self.proxy.tag_pulled(ref.name, digest, ref.tag)
            await self._record_pull(request, ref, digest, ok, message, image_id)
            line = (
                {"status": f"casemate: {message}"}
                if ok
                else {
                    "error": f"casemate: {message}",
                    "errorDetail": {"message": f"casemate: {message}"},
                }
            )
            await self._send(encode_chunk(json.dumps(line).encode() + b"\r\n"))
        if status:
            await self._send(LAST_CHUNK)
        return False, b""

    async def _record_pull(
        self,
        request: DockerRequest,
        ref: ImageRef,
        digest: str,
        ok: bool,
        message: str,
        image_id: str | None,
    ) -> None:
        caller = self.proxy.caller_for(self.uid)
        event = DockerPullVerified(
            actor=caller.username,
            source=f"uid:{self.uid}",
            outcome="verified" if ok else "failed",
            user=caller.username,
            uid=self.uid,
            image=f"{ref.name}:{ref.tag}",
            digest=digest,
            image_id=image_id,
            verified=ok,
            reason=message,
        )
        try:
            await self.proxy.record(event)
        except Exception as e:
            log.error("edge proxy: cannot audit what a pull fetched: %s", e)

    async def _fail(
        self, ex: Exchange, request: DockerRequest, status: int, message: str, code: str
    ) -> tuple[bool, bytes]:
        message = redact(message, self.token)
        with contextlib.suppress(Exception):
            caller = self.proxy.caller_for(self.uid)
            await self.proxy.record(
                DockerCallDecided(
                    actor=caller.username,
                    source=f"uid:{self.uid}",
                    outcome="denied",
                    user=caller.username,
                    uid=self.uid,
                    role=caller.role.value,
                    method=request.method,
                    path=request.path[:512],
                    action=request.action.value,
                    route=request.route.pattern,
                    allowed=False,
                    reason=message,
                    code=code,
                )
            )
        keep = ex.body_done and request.keep_alive and request.method != "HEAD"
        await self._send(error_for(request, status, message, keep))
        if not keep:
            await self._linger()
        return keep, b""

    def _event(
        self, evaluation: Evaluation, outcome: CallOutcome, call_id: str = ""
    ) -> DockerCallDecided:
        request = evaluation.request
        caller = evaluation.caller
        return DockerCallDecided(
            actor=caller.username,
            source=f"uid:{self.uid}",
            outcome="allowed" if outcome.allowed else "denied",
            user=caller.username,
            uid=self.uid,
            role=caller.role.value,
            method=request.method,
            path=request.path[:512],
            api_version=str(request.api_version) if request.api_version is not None else "",
            action=request.action.value,
            route=request.route.pattern,
            image=evaluation.image,
            digest=evaluation.digest,
            container=evaluation.container,
            allowed=outcome.allowed,
            reason=redact(outcome.reason, self.token),
            code=outcome.code,
            cloud_rule=outcome.cloud_rule,
            cloud_request=outcome.cloud_request,
            call_id=call_id,
        )

    # Forwarding --------------------------------------------------------------------------------

    async def _forward(
        self,
        ex: Exchange,
        request: DockerRequest,
        connecting: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    ) -> tuple[bool, bytes]:
        try:
            up_r, up_w = await connecting
        except UpstreamError as e:
            keep = ex.body_done and request.keep_alive and request.method != "HEAD"
            await self._send(error_for(request, 502, f"casemate: {e.message}", keep))
            if not keep:
                await self._linger()
            return keep, b""
        relay = Relay(self, ex, request, up_r, up_w)
        try:
            return await relay.run()
        finally:
            if relay.upstream_reusable and not request.is_stream and request.upgrade is None:
                self.proxy.docker.release(up_r, up_w)
            else:
                await close_writer(up_w)


async def _discard_connection(
    connecting: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None,
) -> None:
    """Cancel a dockerd connection attempt, or close the connection it made."""
    if connecting is None:
        return
    connecting.cancel()
    try:
        _, writer = await connecting
    except BaseException:  # cancelled or failed: nothing to close
        return
    await close_writer(writer)


def _peer_credentials(writer: asyncio.StreamWriter) -> tuple[int, int]:
    sock = writer.get_extra_info("socket")
    if sock is None:
        raise OSError(errno.ENOTSOCK, "no socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("iII", raw)
    return int(pid), int(uid)
