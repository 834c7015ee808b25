"""Raw terminal bytes → keys, for :class:`~casemate.bastion.lineedit.LineEditor` (sans-io).

:class:`KeyDecoder` reads what a terminal sends byte by byte: printable characters (UTF-8
checked strictly: no overlong forms, surrogates or code points above U+10FFFF), control keys,
Alt keys (ESC + a byte), CSI and SS3 key sequences (cursor keys, Home/End/Delete) and bracketed
pastes (``ESC [ 200 ~`` … ``ESC [ 201 ~``). Everything else a terminal might send (escape
sequences with unknown parameters or finals, OSC/DCS/APC/PM/SOS strings up to BEL or ST,
invalid UTF-8, sequences cut short) is consumed and answered with a bell. A sequence's
parameters are kept up to :data:`MAX_SEQUENCE` bytes; a longer one is refused whole.

The editor subclasses it and says what the keys do by implementing the hooks (``_insert_char``,
``_submit``, ``_bell``, ``_control_key``, ``_alt_key``, ``_csi_key``, ``_ss3_key``). During a
paste, only characters, Tab (a space) and line ends reach the editor; keys ring the bell.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod

__all__ = ["MAX_SEQUENCE", "KeyDecoder"]

MAX_SEQUENCE = 32  # parameter/intermediate bytes kept of one CSI sequence


class _State(enum.Enum):
    GROUND = enum.auto()
    ESC = enum.auto()  # after ESC
    ESC_INTER = enum.auto()  # ESC + intermediate bytes (0x20-0x2F), until a final byte
    CSI = enum.auto()  # ESC [ parameters intermediates final
    SS3 = enum.auto()  # ESC O final
    STRING = enum.auto()  # OSC / DCS / SOS / PM / APC body, until BEL or ST
    STRING_ESC = enum.auto()  # ESC inside a string: ST is ESC \


class KeyDecoder(ABC):
    """The input state machine; see the module docstring."""

    def __init__(self) -> None:
        self._state = _State.GROUND
        self._seq = bytearray()
        self._seq_overflow = False
        self._utf8 = bytearray()
        self._utf8_need = 0
        self._utf8_lo = 0x80
        self._utf8_hi = 0xBF
        self._after_cr = False
        self._pasting = False

    @property
    def pasting(self) -> bool:
        """Whether a bracketed paste is in progress."""
        return self._pasting

    # What the keys do (the editor) -------------------------------------------------------

    @abstractmethod
    def _bell(self) -> None:
        """Refuse what was typed."""

    @abstractmethod
    def _insert_char(self, char: str) -> None:
        """A character was typed (not yet checked for being insertable)."""

    @abstractmethod
    def _submit(self) -> None:
        """Enter (CR, LF or CRLF)."""

    @abstractmethod
    def _control_key(self, byte: int) -> None:
        """A C0 control key or DEL (not Enter, not ESC), outside a paste."""

    @abstractmethod
    def _alt_key(self, byte: int) -> bool:
        """ESC ``byte`` outside a paste; False if it is no key (the decoder refuses it)."""

    @abstractmethod
    def _csi_key(self, params: str, final: str) -> None:
        """``ESC [ params final`` outside a paste (not the paste brackets)."""

    @abstractmethod
    def _ss3_key(self, final: str) -> None:
        """``ESC O final`` outside a paste."""

    # Decoding ----------------------------------------------------------------------------

    def _byte(self, byte: int) -> None:
        after_cr, self._after_cr = self._after_cr, False
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
            self._control_key(byte)

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
        elif self._alt_key(byte):
            pass
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
            if len(self._seq) < MAX_SEQUENCE:
                self._seq.append(byte)
            else:
                self._seq_overflow = True
        elif 0x40 <= byte <= 0x7E:
            self._state = _State.GROUND
            if self._seq_overflow:
                self._bell()
            else:
                self._csi_final(self._seq.decode("ascii"), chr(byte))
        elif byte == 0x1B:
            self._bell()
            self._state = _State.ESC
        else:
            self._abort(byte)

    def _csi_final(self, params: str, final: str) -> None:
        if self._pasting:
            if final == "~" and params == "201":
                self._pasting = False
            else:
                self._bell()
        elif final == "~" and params == "200":
            self._pasting = True
        elif not (final == "~" and params == "201"):  # a stray paste end is ignored
            self._csi_key(params, final)

    def _ss3(self, byte: int) -> None:
        if 0x40 <= byte <= 0x7E:
            self._state = _State.GROUND
            final = chr(byte)
            if self._pasting:
                self._bell()
            else:
                self._ss3_key(final)
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
