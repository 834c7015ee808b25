"""A sans-io terminal line editor for the restricted shell, with kubectl/helm completion.

:class:`LineEditor` turns the raw bytes a terminal sends (keys, escape sequences, pastes) into
events: :class:`Echo` (bytes to write back to the terminal), :class:`Submit` (a finished line),
:class:`Interrupt` (Ctrl-C) and :class:`EndOfInput` (Ctrl-D on an empty line). It does no I/O:
the session driver feeds it bytes and acts on the events in order.

The editor is the first thing that sees untrusted keyboard input, so it is strict about what
reaches a line: only printable characters are inserted. Control characters, unknown escape
sequences (CSI with any parameters, SS3, OSC/DCS/APC/PM/SOS strings up to BEL or ST),
invalid UTF-8 and characters that alter how text is displayed (C1 controls, bidirectional and
other format characters, line/paragraph separators) are consumed and answered with a bell.
A submitted line is therefore free of control characters; it is still parsed and decided by
:func:`casemate.bastion.shell.parse_line` and the policy, which remain the authority. The bytes
are read by :class:`~casemate.bastion.keydecode.KeyDecoder`, which this editor extends.

Rendering is deliberately simple and correct for a line that fits on one terminal row: every
change redraws ``"\\r" + prompt + line + "\\x1b[K"`` and moves the cursor back over the text
after it. Several changes within one :meth:`LineEditor.feed` are drawn once (a large paste
does not redraw the line per character).

After a :class:`Submit` the editor starts a new, empty line but does not print the prompt: the
caller runs the command, prints its output, and then writes :meth:`LineEditor.redraw` (which
also shows anything typed ahead in the meantime).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from casemate.bastion.completion import kube_completer
from casemate.bastion.keydecode import KeyDecoder

__all__ = [
    "WORD_BREAKS",
    "Completer",
    "Echo",
    "EditorEvent",
    "EndOfInput",
    "Interrupt",
    "LineEditor",
    "Submit",
    "kube_completer",
]


# Events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Echo:
    """Bytes to write to the terminal (echo, redraw, bell, new lines)."""

    data: bytes


@dataclass(frozen=True)
class Submit:
    """The user pressed Enter: ``line`` is the finished line (without the line ending)."""

    line: str


@dataclass(frozen=True)
class Interrupt:
    """Ctrl-C: the line was cancelled; the editor already showed ``^C`` and a new prompt."""


@dataclass(frozen=True)
class EndOfInput:
    """Ctrl-D on an empty line."""


EditorEvent: TypeAlias = Echo | Submit | Interrupt | EndOfInput

Completer: TypeAlias = Callable[[str], Sequence[str]]

# Characters that separate the word being completed from the text before it.
WORD_BREAKS = " \t|"

_BELL = b"\a"
_CRLF = b"\r\n"

# Unicode categories never inserted: controls (C0, DEL, C1), format characters (zero-width and
# bidirectional controls that make the echo lie about the line), surrogates, line and
# paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _insertable(char: str) -> bool:
    if " " <= char <= "~":
        return True
    return ord(char) > 0x7F and unicodedata.category(char) not in _REFUSED_CATEGORIES


def _insertable_text(text: str) -> bool:
    return all(_insertable(char) for char in text)


def _width(char: str) -> int:
    """Terminal columns of one character (0 for combining marks, 2 for wide East Asian)."""
    if char <= "~":
        return 1
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _is_word_char(char: str) -> bool:
    return char.isalnum()


# The editor -------------------------------------------------------------------------------


class LineEditor(KeyDecoder):
    """A single-line editor fed with raw terminal bytes.

    ``max_line`` bounds the line in UTF-8 bytes (the restricted shell's limit is in bytes too);
    a character that does not fit is dropped with a bell. ``history`` seeds the history (oldest
    first); entries that could not have been typed (control characters, too long, blank) are
    skipped. ``completer`` receives the text before the cursor and returns candidate words for
    the word being completed (the text after the last of :data:`WORD_BREAKS`); candidates that
    do not start with that word or contain control characters are ignored.
    """

    def __init__(
        self,
        prompt: str,
        *,
        history: Sequence[str] = (),
        completer: Completer | None = None,
        max_line: int = 8192,
        history_size: int = 1000,
    ) -> None:
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        if history_size < 0:
            raise ValueError("history_size must not be negative")
        self._prompt = prompt
        self._completer = completer
        self._max_line = max_line
        self._history_size = history_size
        kept = [
            entry
            for entry in history
            if entry.strip() and _insertable_text(entry) and len(entry.encode("utf-8")) <= max_line
        ]
        self._history: list[str] = kept[-history_size:] if history_size else []
        # the line
        self._chars: list[str] = []
        self._nbytes = 0
        self._cursor = 0
        self._kill = ""
        # history navigation: position in history (len = the line being typed) and that line
        self._hist_pos = len(self._history)
        self._draft = ""
        super().__init__()  # the input decoder's state
        self._tabbed = False
        # output of the current feed
        self._events: list[EditorEvent] = []
        self._dirty = False

    # Public API --------------------------------------------------------------------------

    @property
    def line(self) -> str:
        return "".join(self._chars)

    @property
    def cursor(self) -> int:
        """The cursor position, in characters from the start of the line."""
        return self._cursor

    @property
    def prompt(self) -> str:
        return self._prompt

    @property
    def history(self) -> list[str]:
        """The history, oldest first (a copy)."""
        return list(self._history)

    def set_prompt(self, prompt: str) -> None:
        """Change the prompt; write :meth:`redraw` to show it."""
        self._prompt = prompt

    def start(self) -> bytes:
        """The first prompt (and whatever is already on the line)."""
        return self.redraw()

    def redraw(self) -> bytes:
        """Prompt, line and cursor position: for after output was printed while editing."""
        return self._render()

    def feed(self, data: bytes) -> list[EditorEvent]:
        """Process terminal input; return the events it causes, in order."""
        self._events = []
        for byte in data:
            if byte != 0x09:
                self._tabbed = False
            self._byte(byte)
        self._sync()
        events, self._events = self._events, []
        return _merge_echoes(events)

    # Output ------------------------------------------------------------------------------

    def _render(self) -> bytes:
        back = sum(_width(char) for char in self._chars[self._cursor :])
        text = f"\r{self._prompt}{self.line}\x1b[K"
        if back:
            text += f"\x1b[{back}D"
        return text.encode("utf-8", "replace")

    def _sync(self) -> None:
        if self._dirty:
            self._dirty = False
            self._events.append(Echo(self._render()))

    def _echo(self, data: bytes) -> None:
        self._sync()
        self._events.append(Echo(data))

    def _bell(self) -> None:
        self._echo(_BELL)

    # Keys the decoder found ----------------------------------------------------------------

    def _control_key(self, byte: int) -> None:
        handler = _CONTROL_KEYS.get(byte)
        if handler is None:
            self._bell()
        else:
            handler(self)

    def _alt_key(self, byte: int) -> bool:
        if byte in (0x7F, 0x08):  # Alt-Backspace
            self._kill_word_back(lambda char: not _is_word_char(char))
        elif byte == 0x62:  # Alt-b
            self._move_to(self._word_left())
        elif byte == 0x66:  # Alt-f
            self._move_to(self._word_right())
        elif byte == 0x64:  # Alt-d
            self._kill_range(self._cursor, self._word_right())
        else:
            return False
        return True

    def _csi_key(self, params: str, final: str) -> None:
        if final == "~":
            if params in ("1", "7"):
                self._move_to(0)
            elif params in ("4", "8"):
                self._move_to(len(self._chars))
            elif params == "3":
                self._delete_forward()
            else:
                self._bell()
        elif params in ("", "1") and final in _CURSOR_KEYS:
            _CURSOR_KEYS[final](self)
        elif params in ("1;5", "1;3") and final in "CD":
            self._move_to(self._word_right() if final == "C" else self._word_left())
        else:
            self._bell()

    def _ss3_key(self, final: str) -> None:
        if final in _CURSOR_KEYS:
            _CURSOR_KEYS[final](self)
        else:
            self._bell()

    # Editing -----------------------------------------------------------------------------

    def _insert_char(self, char: str) -> None:
        if not _insertable(char):
            self._bell()
            return
        self._insert(char)

    def _insert(self, text: str) -> bool:
        """Insert already checked text at the cursor; False (and a bell) if it does not fit."""
        size = len(text.encode("utf-8"))
        if self._nbytes + size > self._max_line:
            self._bell()
            return False
        if text:
            self._chars[self._cursor : self._cursor] = list(text)
            self._cursor += len(text)
            self._nbytes += size
            self._dirty = True
        return True

    def _set_line(self, text: str) -> None:
        self._chars = list(text)
        self._cursor = len(self._chars)
        self._nbytes = len(text.encode("utf-8"))
        self._dirty = True

    def _reset_line(self) -> None:
        self._chars = []
        self._cursor = 0
        self._nbytes = 0
        self._hist_pos = len(self._history)
        self._draft = ""

    def _kill_range(self, start: int, end: int) -> None:
        if start >= end:
            self._bell()
            return
        killed = "".join(self._chars[start:end])
        del self._chars[start:end]
        self._nbytes -= len(killed.encode("utf-8"))
        self._cursor = start
        self._kill = killed
        self._dirty = True

    def _move_to(self, position: int) -> None:
        if position != self._cursor:
            self._cursor = position
            self._dirty = True

    def _word_left(self) -> int:
        pos = self._cursor
        while pos > 0 and not _is_word_char(self._chars[pos - 1]):
            pos -= 1
        while pos > 0 and _is_word_char(self._chars[pos - 1]):
            pos -= 1
        return pos

    def _word_right(self) -> int:
        pos, end = self._cursor, len(self._chars)
        while pos < end and not _is_word_char(self._chars[pos]):
            pos += 1
        while pos < end and _is_word_char(self._chars[pos]):
            pos += 1
        return pos

    def _kill_word_back(self, is_break: Callable[[str], bool]) -> None:
        pos = self._cursor
        while pos > 0 and is_break(self._chars[pos - 1]):
            pos -= 1
        while pos > 0 and not is_break(self._chars[pos - 1]):
            pos -= 1
        self._kill_range(pos, self._cursor)

    def _delete_forward(self) -> None:
        if self._cursor >= len(self._chars):
            self._bell()
        else:
            self._kill_range(self._cursor, self._cursor + 1)

    # Keys --------------------------------------------------------------------------------

    def _submit(self) -> None:
        line = self.line
        self._sync()
        self._echo(_CRLF)
        if line.strip() and self._history_size and (not self._history or self._history[-1] != line):
            self._history.append(line)
            del self._history[: max(0, len(self._history) - self._history_size)]
        self._reset_line()
        self._events.append(Submit(line))

    def _key_interrupt(self) -> None:
        self._sync()
        self._echo(b"^C" + _CRLF)
        self._reset_line()
        self._events.append(Interrupt())
        self._dirty = True  # the new prompt

    def _key_eof(self) -> None:
        if self._chars:
            self._delete_forward()
            return
        self._echo(_CRLF)
        self._events.append(EndOfInput())

    def _key_backspace(self) -> None:
        if self._cursor == 0:
            self._bell()
            return
        char = self._chars.pop(self._cursor - 1)
        self._cursor -= 1
        self._nbytes -= len(char.encode("utf-8"))
        self._dirty = True

    def _key_home(self) -> None:
        self._move_to(0)

    def _key_end(self) -> None:
        self._move_to(len(self._chars))

    def _key_left(self) -> None:
        self._move_to(max(0, self._cursor - 1))

    def _key_right(self) -> None:
        self._move_to(min(len(self._chars), self._cursor + 1))

    def _key_kill_start(self) -> None:
        self._kill_range(0, self._cursor)

    def _key_kill_end(self) -> None:
        self._kill_range(self._cursor, len(self._chars))

    def _key_kill_word(self) -> None:
        self._kill_word_back(str.isspace)

    def _key_yank(self) -> None:
        if not self._kill:
            self._bell()
        else:
            self._insert(self._kill)

    def _key_clear(self) -> None:
        self._echo(b"\x1b[H\x1b[2J")
        self._dirty = True

    def _key_up(self) -> None:
        if self._hist_pos == 0:
            self._bell()
            return
        if self._hist_pos == len(self._history):
            self._draft = self.line
        self._hist_pos -= 1
        self._set_line(self._history[self._hist_pos])

    def _key_down(self) -> None:
        if self._hist_pos >= len(self._history):
            self._bell()
            return
        self._hist_pos += 1
        if self._hist_pos == len(self._history):
            self._set_line(self._draft)
        else:
            self._set_line(self._history[self._hist_pos])

    def _key_tab(self) -> None:
        # a second Tab right after one that found several candidates and nothing to insert
        # lists them
        previous_tab, self._tabbed = self._tabbed, False
        if self._completer is None:
            self._bell()
            return
        before = "".join(self._chars[: self._cursor])
        word = _current_word(before)
        candidates: list[str] = []
        for candidate in self._completer(before):
            if (
                candidate.startswith(word)
                and candidate not in candidates
                and _insertable_text(candidate)
            ):
                candidates.append(candidate)
        if not candidates:
            self._bell()
        elif len(candidates) == 1:
            only = candidates[0]
            suffix = "" if only.endswith(("=", "/")) else " "
            self._insert(only[len(word) :] + suffix)
        else:
            common = os.path.commonprefix(candidates)
            if len(common) > len(word):
                self._insert(common[len(word) :])
            elif previous_tab:
                self._tabbed = True
                self._echo(_CRLF + "  ".join(candidates).encode("utf-8") + _CRLF)
                self._dirty = True
            else:
                self._tabbed = True
                self._bell()


def _current_word(before: str) -> str:
    start = len(before)
    while start > 0 and before[start - 1] not in WORD_BREAKS:
        start -= 1
    return before[start:]


def _merge_echoes(events: list[EditorEvent]) -> list[EditorEvent]:
    merged: list[EditorEvent] = []
    for event in events:
        last = merged[-1] if merged else None
        if isinstance(event, Echo) and isinstance(last, Echo):
            merged[-1] = Echo(last.data + event.data)
        else:
            merged.append(event)
    return merged


_CONTROL_KEYS: Mapping[int, Callable[[LineEditor], None]] = {
    0x01: LineEditor._key_home,  # Ctrl-A
    0x02: LineEditor._key_left,  # Ctrl-B
    0x03: LineEditor._key_interrupt,  # Ctrl-C
    0x04: LineEditor._key_eof,  # Ctrl-D
    0x05: LineEditor._key_end,  # Ctrl-E
    0x06: LineEditor._key_right,  # Ctrl-F
    0x08: LineEditor._key_backspace,  # Ctrl-H
    0x09: LineEditor._key_tab,
    0x0B: LineEditor._key_kill_end,  # Ctrl-K
    0x0C: LineEditor._key_clear,  # Ctrl-L
    0x0E: LineEditor._key_down,  # Ctrl-N
    0x10: LineEditor._key_up,  # Ctrl-P
    0x15: LineEditor._key_kill_start,  # Ctrl-U
    0x17: LineEditor._key_kill_word,  # Ctrl-W
    0x19: LineEditor._key_yank,  # Ctrl-Y
    0x7F: LineEditor._key_backspace,  # DEL (Backspace on most terminals)
}

# Final bytes of CSI/SS3 cursor keys (ESC [ X, ESC O X).
_CURSOR_KEYS: Mapping[str, Callable[[LineEditor], None]] = {
    "A": LineEditor._key_up,
    "B": LineEditor._key_down,
    "C": LineEditor._key_right,
    "D": LineEditor._key_left,
    "H": LineEditor._key_home,
    "F": LineEditor._key_end,
}
