"""How cobra and pflag read a command line, emulated for :mod:`casemate.bastion.kubectl`: the
flag set known at a level of the command tree, which arguments a flag consumes while cobra looks
for the command, and Go's spelling of booleans and integers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from casemate.bastion.commands import FlagSpec, ToolSpec, VerbSpec

__all__ = [
    "HELP_FLAG",
    "Flagset",
    "args_minus_first",
    "flagset",
    "go_bool",
    "go_int",
    "normalize_flag",
    "skips_value",
    "strip_flags",
]


@dataclass(frozen=True)
class Flagset:
    long: Mapping[str, FlagSpec]
    short: Mapping[str, FlagSpec]


HELP_FLAG = FlagSpec("help", "h", "bool", noopt="true")


def flagset(tool: ToolSpec, level: VerbSpec, *, with_help: bool) -> Flagset:
    long = dict(tool.global_flags)
    if level is not tool.root:
        long.update(level.flags)
    if not with_help:
        # cobra adds the help flag after it has found the command: while finding it,
        # "-h"/"--help" are unknown and assumed to take a value.
        long.pop("help", None)
    elif "help" not in long:
        long["help"] = HELP_FLAG
    short = {spec.short: spec for spec in long.values() if spec.short}
    return Flagset(long, short)


def normalize_flag(tool: ToolSpec, name: str) -> str:
    return name.replace("_", "-") if tool.normalize_underscores else name


def skips_value(tool: ToolSpec, fs: Flagset, arg: str) -> bool:
    """cobra's test (stripFlags / argsMinusFirstX) for "this flag consumes the next arg"."""
    if "=" in arg:
        return False
    if arg.startswith("--"):
        spec = fs.long.get(normalize_flag(tool, arg[2:]))
        return spec is None or not spec.noopt
    if arg.startswith("-") and len(arg) == 2:
        spec = fs.short.get(arg[1])
        return spec is None or not spec.noopt
    return False


def strip_flags(tool: ToolSpec, fs: Flagset, args: Sequence[str]) -> list[str]:
    """cobra.stripFlags: the non-flag words, as cobra sees them while finding a command."""
    words: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--":
            break
        if arg.startswith("-") and skips_value(tool, fs, arg):
            if len(rest) <= 1:
                break
            rest.pop(0)
            continue
        if arg != "" and not arg.startswith("-"):
            words.append(arg)
    return words


def args_minus_first(tool: ToolSpec, fs: Flagset, args: list[str], word: str) -> list[str]:
    """cobra.argsMinusFirstX: remove the first occurrence of ``word`` that is not a flag value."""
    pos = 0
    while pos < len(args):
        arg = args[pos]
        if arg == "--":
            break
        if arg.startswith("-") and skips_value(tool, fs, arg):
            pos += 2
            continue
        if not arg.startswith("-") and arg == word:
            return args[:pos] + args[pos + 1 :]
        pos += 1
    return args


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def go_bool(value: str) -> bool | None:
    if value in _GO_TRUE:
        return True
    if value in _GO_FALSE:
        return False
    return None


def go_int(value: str, bits: int = 64) -> int | None:
    """strconv.ParseInt(value, 0, bits), refusing underscores (None if invalid)."""
    if not value or "_" in value or not value.isascii():
        return None
    sign = 1
    digits = value
    if digits[0] in "+-":
        sign = -1 if digits[0] == "-" else 1
        digits = digits[1:]
    base = 10
    lowered = digits.lower()
    if lowered.startswith(("0x", "0o", "0b")):
        base = {"x": 16, "o": 8, "b": 2}[lowered[1]]
        digits = digits[2:]
    elif len(digits) > 1 and digits[0] == "0":
        base = 8
        digits = digits[1:]
    if not digits or not all(c.isalnum() for c in digits):
        return None
    try:
        number = sign * int(digits, base)
    except ValueError:
        return None
    limit = 1 << (bits - 1)
    if not -limit <= number < limit:
        return None
    return number
