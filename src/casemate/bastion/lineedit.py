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
:func:`casemate.bastion.shell.parse_line` and the policy, which remain the authority.

Rendering is deliberately simple and correct for a line that fits on one terminal row: every
change redraws ``"\\r" + prompt + line + "\\x1b[K"`` and moves the cursor back over the text
after it. Several changes within one :meth:`LineEditor.feed` are drawn once (a large paste
does not redraw the line per character).

After a :class:`Submit` the editor starts a new, empty line but does not print the prompt: the
caller runs the command, prints its output, and then writes :meth:`LineEditor.redraw` (which
also shows anything typed ahead in the meantime).
"""

from __future__ import annotations

import enum
import os
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from casemate.bastion.completion import kube_completer

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

_MAX_SEQUENCE = 32  # parameter/intermediate bytes kept of one CSI sequence


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


class _State(enum.Enum):
    GROUND = enum.auto()
    ESC = enum.auto()  # after ESC
    ESC_INTER = enum.auto()  # ESC + intermediate bytes (0x20-0x2F), until a final byte
    CSI = enum.auto()  # ESC [ parameters intermediates final
    SS3 = enum.auto()  # ESC O final
    STRING = enum.auto()  # OSC / DCS / SOS / PM / APC body, until BEL or ST
    STRING_ESC = enum.auto()  # ESC inside a string: ST is ESC \


# The editor -------------------------------------------------------------------------------


class LineEditor:
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
        # input decoding
        self._state = _State.GROUND
        self._seq = bytearray()
        self._seq_overflow = False
        self._utf8 = bytearray()
        self._utf8_need = 0
        self._utf8_lo = 0x80
        self._utf8_hi = 0xBF
        self._after_cr = False
        self._pasting = False
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

    @property
    def pasting(self) -> bool:
        """Whether a bracketed paste is in progress."""
        return self._pasting

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

    # Byte decoding -----------------------------------------------------------------------

    def _byte(self, byte: int) -> None:
        after_cr, self._after_cr = self._after_cr, False
        if byte != 0x09:
            self._tabbed = False
        if self._utf8_need:
            if self._utf8_lo <= byte <= self._utf8_hi:
                self._utf8.append(byte)
                self._utf8_need -= 1
                self._utf8_lo, self._utf8_hi = 0x80, 0xBF
                if not self._utf8_need:
                    char = self._utf8.decode("utf-8")
                    self._utf8.clear()
                    self._insert_char(char)
                return
            self._utf8.clear()
            self._utf8_need = 0
            self._bell()
        if byte == 0x0A and after_cr and self._state is _State.GROUND:
            return  # CRLF is one line ending
        self._dispatch(byte)

    def _dispatch(self, byte: int) -> None:
        state = self._state
        if state is _State.GROUND:
            self._ground(byte)
        elif state is _State.ESC:
            self._esc(byte)
        elif state is _State.CSI:
            self._csi(byte)
        elif state is _State.SS3:
            self._ss3(byte)
        elif state is _State.ESC_INTER:
            self._esc_inter(byte)
        elif state is _State.STRING:
            self._string(byte)
        else:
            self._string_esc(byte)

    def _abort(self, byte: int) -> None:
        """An escape sequence was cut short by ``byte``: drop it, then process the byte."""
        self._state = _State.GROUND
        self._bell()
        self._dispatch(byte)

    def _ground(self, byte: int) -> None:
        if 0x20 <= byte <= 0x7E:
            self._insert_char(chr(byte))
        elif byte >= 0x80:
            self._utf8_start(byte)
        elif byte == 0x1B:
            self._state = _State.ESC
        elif byte in (0x0D, 0x0A):
            self._after_cr = byte == 0x0D
            self._submit()
        elif self._pasting:
            if byte == 0x09:
                self._insert_char(" ")
            else:
                self._bell()
        else:
            handler = _CONTROL_KEYS.get(byte)
            if handler is None:
                self._bell()
            else:
                handler(self)

    def _utf8_start(self, byte: int) -> None:
        lo, hi = 0x80, 0xBF
        if 0xC2 <= byte <= 0xDF:
            need = 1
        elif 0xE0 <= byte <= 0xEF:
            need = 2
            if byte == 0xE0:
                lo = 0xA0  # no overlong forms
            elif byte == 0xED:
                hi = 0x9F  # no surrogates
        elif 0xF0 <= byte <= 0xF4:
            need = 3
            if byte == 0xF0:
                lo = 0x90
            elif byte == 0xF4:
                hi = 0x8F  # nothing above U+10FFFF
        else:
            self._bell()  # continuation byte without a lead, C0/C1 overlongs, F5-FF
            return
        self._utf8.append(byte)
        self._utf8_need = need
        self._utf8_lo, self._utf8_hi = lo, hi

    def _esc(self, byte: int) -> None:
        self._state = _State.GROUND
        if byte == 0x5B:  # [
            self._state = _State.CSI
            self._seq.clear()
            self._seq_overflow = False
        elif byte == 0x4F:  # O
            self._state = _State.SS3
        elif byte in (0x5D, 0x50, 0x58, 0x5E, 0x5F):  # ] P X ^ _
            self._state = _State.STRING
        elif 0x20 <= byte <= 0x2F:
            self._state = _State.ESC_INTER
        elif byte == 0x1B:
            self._bell()
            self._state = _State.ESC
        elif self._pasting:
            if 0x30 <= byte <= 0x7E:
                self._bell()
            else:
                self._abort(byte)
        elif byte in (0x7F, 0x08):  # Alt-Backspace
            self._kill_word_back(lambda char: not _is_word_char(char))
        elif byte == 0x62:  # Alt-b
            self._move_to(self._word_left())
        elif byte == 0x66:  # Alt-f
            self._move_to(self._word_right())
        elif byte == 0x64:  # Alt-d
            self._kill_range(self._cursor, self._word_right())
        elif 0x30 <= byte <= 0x7E:
            self._bell()
        else:
            self._abort(byte)

    def _esc_inter(self, byte: int) -> None:
        if 0x20 <= byte <= 0x2F:
            return
        if 0x30 <= byte <= 0x7E:
            self._state = _State.GROUND
            self._bell()
        else:
            self._abort(byte)

    def _csi(self, byte: int) -> None:
        if 0x20 <= byte <= 0x3F:
            if len(self._seq) < _MAX_SEQUENCE:
                self._seq.append(byte)
            else:
                self._seq_overflow = True
        elif 0x40 <= byte <= 0x7E:
            self._state = _State.GROUND
            if self._seq_overflow:
                self._bell()
            else:
                self._csi_key(self._seq.decode("ascii"), chr(byte))
        elif byte == 0x1B:
            self._bell()
            self._state = _State.ESC
        else:
            self._abort(byte)

    def _csi_key(self, params: str, final: str) -> None:
        if self._pasting:
            if final == "~" and params == "201":
                self._pasting = False
            else:
                self._bell()
            return
        if final == "~":
            if params in ("1", "7"):
                self._move_to(0)
            elif params in ("4", "8"):
                self._move_to(len(self._chars))
            elif params == "3":
                self._delete_forward()
            elif params == "200":
                self._pasting = True
            elif params != "201":
                self._bell()
        elif params in ("", "1") and final in _CURSOR_KEYS:
            _CURSOR_KEYS[final](self)
        elif params in ("1;5", "1;3") and final in "CD":
            self._move_to(self._word_right() if final == "C" else self._word_left())
        else:
            self._bell()

    def _ss3(self, byte: int) -> None:
        if 0x40 <= byte <= 0x7E:
            self._state = _State.GROUND
            final = chr(byte)
            if not self._pasting and final in _CURSOR_KEYS:
                _CURSOR_KEYS[final](self)
            else:
                self._bell()
        elif byte == 0x1B:
            self._bell()
            self._state = _State.ESC
        else:
            self._abort(byte)

    def _string(self, byte: int) -> None:
        if byte == 0x07:  # BEL ends an OSC string (xterm)
            self._state = _State.GROUND
            self._bell()
        elif byte == 0x1B:
            self._state = _State.STRING_ESC
        elif byte < 0x20 or byte == 0x7F:
            # CAN/SUB cancel a string; any other control (Enter, Ctrl-C) is taken as the user
            # typing again, so that a stray OSC/DCS opener cannot swallow the session.
            self._state = _State.GROUND
            self._bell()
            if byte not in (0x18, 0x1A):
                self._dispatch(byte)
        # anything else is the string's body: consumed

    def _string_esc(self, byte: int) -> None:
        if byte == 0x5C:  # ESC \ is ST
            self._state = _State.GROUND
            self._bell()
        else:  # a new escape sequence cuts the string short
            self._bell()
            self._state = _State.ESC
            self._dispatch(byte)

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
