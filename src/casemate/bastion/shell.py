"""Casemate's restricted shell: one typed line becomes a pipeline of argv vectors, or a refusal.

The accepted language is a small, exact subset of bash (non-interactive, so no history
expansion):

* words separated by blanks (space, tab), with bash quoting: ``'single'`` (everything literal),
  ``"double"`` (``\\`` escapes only ``$ ` " \\`` and newline), ``\\x`` outside quotes, and
  adjacent pieces joined into one word (``kube""ctl`` is ``kubectl``);
* a backslash-newline outside single quotes is a line continuation and is removed, exactly as
  bash does; any other newline is refused (one command per line);
* ``|`` between commands. The first command must be ``kubectl`` or ``helm``; later ones must be
  safe text filters (see :mod:`casemate.bastion.filters`);
* at the very end of the line, one output redirection ``> FILE`` or ``>> FILE`` (with a blank
  before ``>``; one word after it, nothing after that word): the last command's standard output
  goes into ``FILE``. The shell only records the name (:attr:`ParsedLine.redirect`); the session
  driver checks that it lies inside the session's workspace and writes the file itself.

Everything else is refused with a reason, never approximated: expansions of any kind (``$``,
backticks, ``~``, globs ``* ? [``, braces ``{ }``), every other redirection (input ``<``,
file-descriptor forms like ``2>&1`` or ``2>x``, ``>|``, ``&>``, here-documents and
here-strings, a redirection anywhere but at the end), lists (``;``, ``&&``, ``||``: one line is
one decision and one audit record), background ``&``, subshells, groups, functions, compound
commands, comments, assignments, programs given as paths, control characters (including ANSI
escapes and NUL), invisible Unicode format characters, and lines over :data:`MAX_LINE_BYTES`.

The words are what the executed program receives: the session driver runs the argv directly
(no shell), so nothing here is ever re-interpreted. As a second opinion the line is also parsed
with bashlex; if bashlex fails, finds anything but words and pipes, or splits the words
differently, the line is refused.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass
from typing import Any

import bashlex  # untyped: used only in _bashlex_words

from casemate.bastion.filters import FILTERS, FilterRefusal, check_filter
from casemate.errors import Denied

__all__ = [
    "FIRST_PROGRAMS",
    "MAX_LINE_BYTES",
    "Command",
    "ParsedLine",
    "Redirect",
    "ShellRefused",
    "parse_line",
]

MAX_LINE_BYTES = 8192
FIRST_PROGRAMS = frozenset({"kubectl", "helm"})

_BLANKS = " \t"

# Unquoted characters that bash would treat specially, and why they are refused.
_REFUSED_UNQUOTED: dict[str, str] = {
    ";": "command lists (';') are not allowed: one command per line",
    "&": "'&' (background jobs, '&&' lists, '&>' redirections) is not allowed",
    "<": "redirections ('<', '<<', '<<<') are not allowed",
    "(": "subshells, process substitution and function definitions are not allowed",
    ")": "subshells, process substitution and function definitions are not allowed",
    "$": "expansions ('$VAR', '${...}', '$(...)', '$((...))', $'...') are not allowed",
    "`": "command substitution (backticks) is not allowed",
    "*": "unquoted glob characters ('*', '?', '[') are not allowed: quote the argument",
    "?": "unquoted glob characters ('*', '?', '[') are not allowed: quote the argument",
    "[": "unquoted glob characters ('*', '?', '[') are not allowed: quote the argument",
    "{": "unquoted braces are not allowed (brace expansion, groups): quote the argument",
    "}": "unquoted braces are not allowed (brace expansion, groups): quote the argument",
    "~": "tilde expansion is not allowed: quote '~' or write the path in full",
}

_SHELL_KEYWORDS = frozenset(
    "if then else elif fi case esac for select while until do done in function time coproc "
    "! [[ ]] { }".split()
)

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")

# Unicode categories refused anywhere in a line: controls (Cc, except tab and the newline of a
# line continuation), format characters (Cf: zero-width and bidirectional controls), surrogates,
# private use, unassigned, and line/paragraph separators. Other space separators (Zs) are
# refused too: bash does not split on them, so they would silently join words.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})


class ShellRefused(Denied):
    """The restricted shell refused a line.

    A subclass of :class:`~casemate.errors.Denied` (not ``InvalidInput``): every refusal is a
    security decision. A line the shell cannot represent is indistinguishable from an evasion
    attempt, so it must be audited and answered like a policy rejection (403), not treated as a
    harmless typo.
    """

    title = "Command refused"

    def __init__(self, reason: str) -> None:
        super().__init__(f"command refused: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Command:
    """One stage of a pipeline: the argv the program receives."""

    argv: tuple[str, ...]

    @property
    def program(self) -> str:
        return self.argv[0]

    def display(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Redirect:
    """``> path`` (``append`` False) or ``>> path``: where the last stage's output goes. The
    path is as typed; it is not checked here (see the session driver)."""

    path: str
    append: bool = False

    def display(self) -> str:
        return f"{'>>' if self.append else '>'} {shlex.quote(self.path)}"


@dataclass(frozen=True)
class ParsedLine:
    """A parsed line: ``stages[0]`` is kubectl or helm, the rest are text filters;
    ``redirect`` is the output redirection that ends the line, if any."""

    line: str
    stages: tuple[Command, ...]
    redirect: Redirect | None = None

    @property
    def first(self) -> Command:
        return self.stages[0]

    @property
    def filters(self) -> tuple[Command, ...]:
        return self.stages[1:]

    def display(self) -> str:
        """An unambiguous rendering (each argv re-quoted), for audit records and prompts."""
        shown = " | ".join(stage.display() for stage in self.stages)
        return f"{shown} {self.redirect.display()}" if self.redirect else shown


def parse_line(line: str) -> ParsedLine:
    """Parse one line of the restricted shell; raise :class:`ShellRefused` if not allowed."""
    _check_characters(line)
    lexer = _Lexer(line)
    stages = lexer.run()
    for stage in stages:
        _check_stage_head(stage)
    commands = tuple(Command(tuple(word.value for word in stage)) for stage in stages)
    _check_programs(commands)
    target = lexer.target
    _cross_check(line, stages, target)
    redirect = None
    if target is not None:
        if not target.value:
            raise ShellRefused("empty file name after '>'")
        redirect = Redirect(target.value, append=lexer.append)
    return ParsedLine(line=line, stages=commands, redirect=redirect)


# Characters -------------------------------------------------------------------------------


def _check_characters(line: str) -> None:
    if not line.strip(_BLANKS + "\n"):
        raise ShellRefused("empty command")
    try:
        size = len(line.encode("utf-8"))
    except UnicodeEncodeError:
        raise ShellRefused("the line is not valid text (lone surrogate characters)") from None
    if size > MAX_LINE_BYTES:
        raise ShellRefused(f"the line is longer than {MAX_LINE_BYTES} bytes")
    for index, char in enumerate(line):
        if char in "\t\n":
            continue
        if char == "\x00":
            raise ShellRefused(f"NUL byte at position {index}")
        if char == "\x1b":
            raise ShellRefused(f"escape character (ANSI escape sequence) at position {index}")
        if char == "\r":
            raise ShellRefused(f"carriage return at position {index}")
        if char == " ":
            continue
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            name = unicodedata.name(char, "unnamed")
            raise ShellRefused(
                f"control or invisible character U+{ord(char):04X} ({name}) at position {index}"
            )


# Lexer ------------------------------------------------------------------------------------


@dataclass
class _Word:
    """A word as bash sees it: its value, its span in the line, and how it was quoted."""

    value: str = ""
    start: int = 0
    end: int = 0
    head_unquoted: str = ""
    quoted: bool = False


class _Lexer:
    def __init__(self, line: str) -> None:
        self.line = line
        self.pos = 0
        self.stages: list[list[_Word]] = [[]]
        self.word: _Word | None = None
        self.redirecting = False  # after the ">" of an output redirection
        self.append = False
        self.target: _Word | None = None

    def run(self) -> list[list[_Word]]:
        line = self.line
        while self.pos < len(line):
            char = line[self.pos]
            if char in _BLANKS:
                self._end_word()
                self.pos += 1
            elif char == "\\":
                self._backslash()
            elif char == "'":
                self._single_quoted()
            elif char == '"':
                self._double_quoted()
            elif char == "\n":
                raise ShellRefused(
                    "line break: one command per line (end a line with '\\' to continue it)"
                )
            elif char == "|":
                self._pipe()
            elif char == ">":
                self._redirect()
            elif char in _REFUSED_UNQUOTED:
                raise ShellRefused(f"{_REFUSED_UNQUOTED[char]} (at position {self.pos})")
            elif char == "#" and self.word is None:
                raise ShellRefused("comments ('#' at the start of a word) are not allowed")
            else:
                self._append(char, unquoted=True)
                self.pos += 1
                self._mark_end()
        self._end_word()
        if not self.stages[-1]:
            raise ShellRefused("the pipeline ends with '|' and no command")
        if self.redirecting and self.target is None:
            raise ShellRefused("no file name after '>'")
        return self.stages

    def _start(self, start: int) -> _Word:
        if self.word is None:
            self.word = _Word(start=start)
        return self.word

    def _append(self, value: str, *, unquoted: bool, start: int | None = None) -> None:
        """Append to the current word the text of the construct at ``start`` (default: the
        current position) that ends just before the lexer's next position."""
        word = self._start(self.pos if start is None else start)
        if unquoted and not word.quoted:
            word.head_unquoted += value
        else:
            word.quoted = True
        word.value += value

    def _mark_end(self) -> None:
        if self.word is not None:
            self.word.end = self.pos

    def _end_word(self) -> None:
        if self.word is None:
            return
        if self.redirecting:
            if self.target is not None:
                raise ShellRefused(
                    "the redirection must end the line: one file name after '>', nothing else"
                )
            self.target = self.word
        else:
            self.stages[-1].append(self.word)
        self.word = None

    def _redirect(self) -> None:
        """``> FILE`` / ``>> FILE`` at the end of the line; every other form is refused."""
        line, at = self.line, self.pos
        if self.redirecting:
            raise ShellRefused(f"only one redirection is allowed (at position {at})")
        if self.word is not None:
            raise ShellRefused(
                f"put a blank before '>' (at position {at}): file-descriptor redirections "
                "('2>', '2>&1') and '>' inside words are not allowed"
            )
        if not self.stages[-1]:
            raise ShellRefused(f"a redirection must follow a command (at position {at})")
        append = line.startswith(">>", at)
        nxt = line[at + (2 if append else 1) : at + (3 if append else 2)]
        if nxt in ("&", "|", ">", "("):
            raise ShellRefused(
                f"redirections other than '> FILE' and '>> FILE' are not allowed "
                f"(at position {at}): output goes to the session, or to a workspace file"
            )
        self.redirecting = True
        self.append = append
        self.pos = at + (2 if append else 1)

    def _backslash(self) -> None:
        line = self.line
        if self.pos + 1 >= len(line):
            raise ShellRefused("the line ends with a backslash (nothing to continue)")
        nxt = line[self.pos + 1]
        start = self.pos
        self.pos += 2
        if nxt == "\n":
            return  # line continuation: removed, joins the surrounding text
        self._append(nxt, unquoted=False, start=start)
        self._mark_end()

    def _single_quoted(self) -> None:
        end = self.line.find("'", self.pos + 1)
        if end < 0:
            raise ShellRefused(f"unbalanced single quote at position {self.pos}")
        content = self.line[self.pos + 1 : end]
        if "\n" in content:
            raise ShellRefused("line break inside quotes is not allowed")
        start = self.pos
        self.pos = end + 1
        self._append(content, unquoted=False, start=start)
        self._mark_end()

    def _double_quoted(self) -> None:
        line = self.line
        start = self.pos
        pos = self.pos + 1
        value: list[str] = []
        while True:
            if pos >= len(line):
                raise ShellRefused(f"unbalanced double quote at position {start}")
            char = line[pos]
            if char == '"':
                break
            if char == "\\":
                if pos + 1 >= len(line):
                    raise ShellRefused(f"unbalanced double quote at position {start}")
                nxt = line[pos + 1]
                pos += 2
                if nxt == "\n":
                    continue
                if nxt in '$`"\\':
                    value.append(nxt)
                else:
                    value.append("\\" + nxt)
                continue
            if char == "$":
                raise ShellRefused("expansions ('$') inside double quotes are not allowed")
            if char == "`":
                raise ShellRefused("command substitution (backticks) is not allowed")
            if char == "\n":
                raise ShellRefused("line break inside quotes is not allowed")
            value.append(char)
            pos += 1
        self.pos = pos + 1
        self._append("".join(value), unquoted=False, start=start)
        self._mark_end()

    def _pipe(self) -> None:
        if self.redirecting:
            raise ShellRefused(
                f"the redirection must end the line ('|' at position {self.pos} follows it)"
            )
        nxt = self.line[self.pos + 1 : self.pos + 2]
        if nxt == "|":
            raise ShellRefused("'||' lists are not allowed: one command per line")
        if nxt == "&":
            raise ShellRefused("'|&' (pipe with stderr) is not allowed")
        self._end_word()
        if not self.stages[-1]:
            raise ShellRefused("empty command before '|'")
        self.stages.append([])
        self.pos += 1


# Programs ---------------------------------------------------------------------------------


def _check_stage_head(stage: list[_Word]) -> None:
    head = stage[0]
    if _ASSIGNMENT.match(head.head_unquoted):
        raise ShellRefused("variable assignments ('NAME=value command') are not allowed")
    if not head.quoted and head.value in _SHELL_KEYWORDS:
        raise ShellRefused(f"shell keyword {head.value!r}: compound commands are not allowed")


def _check_programs(commands: tuple[Command, ...]) -> None:
    for index, command in enumerate(commands):
        program = command.program
        allowed = FIRST_PROGRAMS if index == 0 else frozenset(FILTERS)
        if program in allowed:
            continue
        if not program.isascii():
            raise ShellRefused(
                f"program name {program!r} contains non-ASCII characters (look-alike letters?)"
            )
        if "/" in program:
            raise ShellRefused(
                f"programs are named, not given as paths ({program!r}): "
                f"use one of {', '.join(sorted(allowed))}"
            )
        if index == 0:
            raise ShellRefused(
                f"{program!r} is not allowed: the command must start with kubectl or helm"
            )
        raise ShellRefused(
            f"{program!r} is not allowed after '|': only {', '.join(sorted(FILTERS))}"
        )
    for command in commands[1:]:
        try:
            check_filter(command.argv)
        except FilterRefusal as exc:
            raise ShellRefused(str(exc)) from None


# Cross-check with bashlex -------------------------------------------------------------------


def _cross_check(line: str, stages: list[list[_Word]], target: _Word | None = None) -> None:
    """Refuse the line unless bashlex sees the same pipeline: the same commands and the same
    word boundaries. For the words whose unquoting bashlex does reliably (no quote characters,
    or one single-quoted string) it must also find no expansion and the same value. For other
    words bashlex 0.18 is not a usable oracle (it drops every double quote character and loses
    track of single quotes after another quoted part, inventing expansions in literal text);
    there the exact lexer above is the authority, and it is tested against bash itself."""
    parsed = _bashlex_words(line)
    if parsed is None:
        raise _ambiguous()
    reference, redirect = parsed
    if len(reference) != len(stages):
        raise _ambiguous()
    if (redirect is None) != (target is None):
        raise _ambiguous()
    if redirect is not None and target is not None:
        reference = [*reference[:-1], [*reference[-1], redirect]]
        stages = [*stages[:-1], [*stages[-1], target]]
    for ours, theirs in zip(stages, reference, strict=True):
        if len(ours) != len(theirs):
            raise _ambiguous()
        for word, (start, end, value, expands) in zip(ours, theirs, strict=True):
            if (word.start, word.end) != (start, end):
                raise _ambiguous()
            raw = line[word.start : word.end]
            reliable = not any(q in raw for q in "'\"") or (
                raw.startswith("'") and raw.endswith("'") and raw.count("'") == 2
            )
            if reliable and (expands or word.value != value):
                raise _ambiguous()


def _ambiguous() -> ShellRefused:
    return ShellRefused(
        "the line's quoting is ambiguous (the reference parser splits it differently); "
        "simplify the quoting, e.g. quote each argument once with single quotes"
    )


_BashWord = tuple[int, int, str, bool]


def _bashlex_words(line: str) -> tuple[list[list[_BashWord]], _BashWord | None] | None:
    """(start, end, value, has expansions) of the words of each pipeline stage according to
    bashlex, and of the target of a ``>``/``>>`` redirection that is the last part of the last
    command; None if it reports anything else, or fails. The only place that touches bashlex's
    untyped API."""
    try:
        trees: list[Any] = bashlex.parse(line)
    except Exception:  # bashlex raises many unrelated types (ParsingError, NotImplementedError…)
        return None
    if len(trees) != 1:
        return None
    tree = trees[0]
    if tree.kind == "command":
        commands = [tree]
    elif tree.kind == "pipeline":
        parts = list(tree.parts)
        commands = parts[0::2]
        pipes = parts[1::2]
        if any(p.kind != "pipe" or getattr(p, "pipe", None) != "|" for p in pipes):
            return None
    else:
        return None
    result: list[list[_BashWord]] = []
    redirect: _BashWord | None = None
    for index, command in enumerate(commands):
        if command.kind != "command":
            return None
        parts = list(command.parts)
        if parts and parts[-1].kind == "redirect":
            node = parts.pop()
            output = getattr(node, "output", None)
            if (
                index != len(commands) - 1
                or getattr(node, "type", None) not in (">", ">>")
                or getattr(node, "input", None) is not None
                or getattr(output, "kind", None) != "word"
            ):
                return None
            redirect = _bash_word(output)
        words: list[_BashWord] = []
        for part in parts:
            if part.kind != "word":
                return None
            words.append(_bash_word(part))
        result.append(words)
    return result, redirect


def _bash_word(part: Any) -> _BashWord:
    start, end = part.pos
    expands = bool(list(getattr(part, "parts", [])))
    return (int(start), int(end), str(part.word), expands)
