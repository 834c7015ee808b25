"""Shared sessions: who may watch a live bastion session, who may type in it, and the audit
of what a colleague types.

The owner of a session (or an admin) shares it with a user, who may then watch it live; with
``typing`` the user may also type into it (``POST /sessions/{id}/share`` with ``"typing":
true``). Both grants are audited (``bastion.session.shared``, outcome ``shared`` or
``shared-typing``) and revocable (outcome ``revoked`` ends the watcher's stream at once,
``typing-revoked`` keeps it watching). A typing grant is checked on every message, so a
revocation stops the next key. The typist's keys go to the session's terminal exactly as the
owner's would (the restricted shell, or the container shell of an approved ``kubectl exec
-it``); the commands they start run under the owner's grant and are audited as the session's,
and what the typist typed is audited under the typist's own name: one
``bastion.session.typed`` record per line entered (Enter, or every :data:`MAX_TYPED` bytes
without one, or when the typist stops), with the session's secrets masked. The recording
holds every key and a marker naming whoever starts typing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from casemate.bastion.recording import Redactor

__all__ = ["MAX_TYPED", "Sharing", "TypedLines", "printable"]

#: Bytes of a typist's line kept before it is audited without an Enter.
MAX_TYPED: Final = 512

Keyboard = Callable[[bytes], Awaitable[None]]


def printable(data: bytes) -> str:
    """``data`` as text an auditor can read: control characters as ``^X``, escape sequences
    as ``^[``."""
    text = data.decode("utf-8", "replace")
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F:
            out.append("^" + chr(code ^ 0x40))
        else:
            out.append(ch)
    return "".join(out)


class TypedLines:
    """The lines one typist enters, with the session's secrets masked as a stream first (a
    secret typed across several messages, or longer than a line's limit, is still masked),
    then cut at Enter (``\\r`` or ``\\n``) or at :data:`MAX_TYPED` bytes; sans-io."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self._redactor = Redactor(secrets)
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        return self._split(self._redactor.feed(data))

    def _split(self, clean: bytes) -> list[bytes]:
        lines: list[bytes] = []
        for byte in clean:
            if byte in (0x0D, 0x0A):
                lines.append(bytes(self._buf))
                self._buf.clear()
                continue
            self._buf.append(byte)
            if len(self._buf) >= MAX_TYPED:
                lines.append(bytes(self._buf))
                self._buf.clear()
        return lines

    def flush(self) -> list[bytes]:
        lines = self._split(self._redactor.flush())
        if self._buf:
            lines.append(bytes(self._buf))
            self._buf.clear()
        return lines


@dataclass
class Sharing:
    """The shares of one live session (held by :class:`~casemate.gateway.service
    .BastionSession`)."""

    watchers: set[str] = field(default_factory=set)
    typists: set[str] = field(default_factory=set)
    #: where typed keys go: the session's terminal shell (interactive channels only)
    keyboard: Keyboard | None = None
    last_typist: str = ""
    _lines: dict[str, TypedLines] = field(default_factory=dict)

    def grant(self, user: str, *, typing: bool) -> None:
        self.watchers.add(user)
        if typing:
            self.typists.add(user)

    def revoke(self, user: str, *, typing_only: bool) -> None:
        self.typists.discard(user)
        if not typing_only:
            self.watchers.discard(user)

    def may_type(self, user: str) -> bool:
        return user in self.typists and user in self.watchers

    def typed(self, user: str, data: bytes, secrets: tuple[str, ...]) -> list[str]:
        """The lines of ``user`` that ``data`` completes, masked, ready for the audit."""
        lines = self._lines.get(user)
        if lines is None:
            lines = self._lines[user] = TypedLines(secrets)
        return [printable(line)[:2000] for line in lines.feed(data)]

    def stopped(self, user: str) -> list[str]:
        """What ``user`` typed without ending the line, when they stop (or lose the grant)."""
        lines = self._lines.pop(user, None)
        return [printable(line)[:2000] for line in lines.flush()] if lines is not None else []
