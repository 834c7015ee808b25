"""Tab completion of kubectl / helm command lines for the restricted shell's line editor
(:class:`~casemate.bastion.lineedit.LineEditor`): commands, subcommands, flags, kinds and the
filter programs, from the same tables the parser uses. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from casemate.bastion.commands import TOOLS, FlagSpec, ToolSpec, VerbSpec
from casemate.bastion.filters import FILTERS
from casemate.bastion.kinds import BUILTIN_KINDS

__all__ = ["kube_completer"]


# Completion of kubectl / helm command lines -------------------------------------------------

_KIND_WORDS: tuple[str, ...] = tuple(
    sorted(
        {"all", *(k.plural for k in BUILTIN_KINDS), *(s for k in BUILTIN_KINDS for s in k.short)}
    )
)


def kube_completer(text: str) -> list[str]:
    """Candidates for the last word of ``text`` (a restricted-shell line up to the cursor).

    Completes the program (``kubectl``/``helm`` first, a text filter after ``|``), kubectl and
    helm commands and sub-commands, long flags (``--…``) of the current command and the
    tool's global flags, and built-in resource kinds where a command takes ``TYPE[,TYPE]`` or
    ``TYPE/NAME``. Commands and flags the policy refuses outright are never offered. Nothing
    needs the cluster; names of objects are not completed. A line with an unbalanced quote, or
    a current word that uses quoting, gets no candidates.
    """
    split = _split_words(text)
    if split is None:
        return []
    stages, word = split
    words = stages[-1]
    if len(stages) > 1:
        return _matching(sorted(FILTERS), word) if not words else []
    if not words:
        return _matching(sorted(TOOLS), word)
    tool = TOOLS.get(words[0])
    if tool is None:
        return []
    return _complete_tool(tool, words[1:], word)


def _matching(names: Sequence[str], word: str) -> list[str]:
    return [name for name in names if name.startswith(word)]


def _split_words(text: str) -> tuple[list[list[str]], str] | None:
    """The complete words of each pipeline stage and the (unquoted) word being typed; None if
    a quote is unbalanced or the word being typed uses quoting or backslashes."""
    stages: list[list[str]] = [[]]
    value: list[str] = []
    in_word = False
    plain = True
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in " \t|":
            if in_word:
                stages[-1].append("".join(value))
            value, in_word, plain = [], False, True
            if char == "|":
                stages.append([])
            pos += 1
        elif char == "'":
            end = text.find("'", pos + 1)
            if end < 0:
                return None
            value.append(text[pos + 1 : end])
            in_word, plain, pos = True, False, end + 1
        elif char == '"':
            pos += 1
            while True:
                if pos >= len(text):
                    return None
                inner = text[pos]
                if inner == '"':
                    break
                if inner == "\\" and pos + 1 < len(text) and text[pos + 1] in '$`"\\':
                    value.append(text[pos + 1])
                    pos += 2
                else:
                    value.append(inner)
                    pos += 1
            in_word, plain, pos = True, False, pos + 1
        elif char == "\\":
            if pos + 1 >= len(text):
                return None
            value.append(text[pos + 1])
            in_word, plain, pos = True, False, pos + 2
        else:
            value.append(char)
            in_word = True
            pos += 1
    if not plain:
        return None
    return stages, "".join(value)


def _long_flags(tool: ToolSpec, level: VerbSpec) -> dict[str, FlagSpec]:
    table = dict(tool.global_flags)
    if level is not tool.root:
        table.update(level.flags)
    return table


def _complete_tool(tool: ToolSpec, words: Sequence[str], word: str) -> list[str]:
    level = tool.root
    positionals: list[str] = []
    expect_value = False
    dashdash = False
    for current in words:
        if expect_value:
            expect_value = False
        elif dashdash:
            positionals.append(current)
        elif current == "--":
            dashdash = True
        elif current.startswith("--"):
            name, eq, _ = current[2:].partition("=")
            if tool.normalize_underscores:
                name = name.replace("_", "-")
            spec = _long_flags(tool, level).get(name)
            expect_value = spec is not None and spec.takes_value and not eq
        elif current.startswith("-") and len(current) > 1:
            shorts = {s.short: s for s in _long_flags(tool, level).values() if s.short}
            letters = current[1:]
            for index, letter in enumerate(letters):
                spec = shorts.get(letter)
                if spec is None:
                    break
                if spec.takes_value:
                    expect_value = index == len(letters) - 1
                    break
        else:
            sub = level.find_subverb(current) if not positionals else None
            if sub is not None:
                level = sub
            else:
                positionals.append(current)
    if expect_value or dashdash or level.refuse:
        return []
    if word.startswith("-"):
        if "=" in word:
            return []
        names = (f"--{n}" for n, spec in _long_flags(tool, level).items() if not spec.refuse)
        return _matching(sorted(names), word)
    if not positionals and level.subverbs:
        subs = _matching(sorted(s.name for s in level.subverbs.values() if not s.refuse), word)
        if subs or level.subverb_required or level is tool.root:
            return subs
    if level.positional == "resources" and all("/" in p for p in positionals):
        return _kind_candidates(word, several=not positionals)
    return []


def _kind_candidates(word: str, *, several: bool) -> list[str]:
    """Kinds for ``TYPE``, ``TYPE,TYPE`` (only as the first argument) or ``TYPE/NAME``."""
    if "/" in word:
        return []
    head, comma, last = word.rpartition(",")
    if comma and not several:
        return []
    prefix = head + comma
    return [prefix + kind for kind in _KIND_WORDS if kind.startswith(last)]
