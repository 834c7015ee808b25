"""The text tools allowed after ``|`` in the restricted shell, and their option tables.

A filter stage may only read standard input and write standard output: no file operands, no
option that reads or writes a file, runs a program or changes where output goes. Every tool is
described by an allowlist (:data:`FILTERS`); anything not in it is refused, so an option that a
newer version of the tool adds is refused until someone reviews it.

Option syntax follows GNU ``getopt_long`` (grep, head, tail, wc, sort, uniq, cut from GNU
coreutils/grep) and jq's own parser. Two deliberate restrictions remove version- and
environment-dependent ambiguity:

* GNU tools: options must come before operands. GNU permutes arguments unless
  ``POSIXLY_CORRECT`` is set, in which case ``grep x -i`` reads a file named ``-i``; refusing
  options after operands makes the count of operands the same under both conventions.
* Long options must be written in full. GNU accepts unambiguous prefixes (``--ign`` for
  ``--ignore-case``); an exact match always wins, so allowing only exact names is safe.

jq filters are checked for the builtins that read the environment or files (``env``,
``$ENV``, ``import``, ``include``, module metadata and search-path builtins). The check does not
skip string literals on purpose: jq string interpolation (``"\\(env)"``) runs code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["FILTERS", "FilterRefusal", "FilterSpec", "check_filter"]


class FilterRefusal(Exception):  # internal signal, turned into ShellRefused
    """Raised by :func:`check_filter`; the shell turns it into a ``ShellRefused``."""


def _no_check(_operand: str) -> None:
    return None


@dataclass(frozen=True)
class FilterSpec:
    """Allowed options of one text tool.

    ``short_bool``/``short_value`` are option letters; ``long_*`` are names without dashes.
    ``long_optional`` options take a value only as ``--name=value`` (GNU optional arguments).
    ``long_pair`` options consume two following arguments (jq ``--arg NAME VALUE``).
    ``forbidden`` maps an option as typed (``-o``, ``--output``) to the reason it is refused.
    ``max_operands`` counts non-option arguments; ``operand_zero_with`` lists options after which
    no operand is allowed (grep's pattern given with ``-e``).
    """

    name: str
    short_bool: frozenset[str] = frozenset()
    short_value: frozenset[str] = frozenset()
    long_bool: frozenset[str] = frozenset()
    long_value: frozenset[str] = frozenset()
    long_optional: frozenset[str] = frozenset()
    long_pair: frozenset[str] = frozenset()
    forbidden: Mapping[str, str] = field(default_factory=dict)
    max_operands: int = 0
    operand_zero_with: frozenset[str] = frozenset()
    numeric_shorthand: bool = False
    gnu: bool = True
    check_operand: Callable[[str], None] = _no_check


def _letters(s: str) -> frozenset[str]:
    return frozenset(s)


def _names(s: str) -> frozenset[str]:
    return frozenset(s.split())


_READS_FILES = "reads files on the bastion"
_WRITES_FILES = "writes files on the bastion"
_RUNS_PROGRAMS = "runs other programs"

# jq builtins (and variables) that reach outside the JSON stream: the environment, files
# through the module system, or paths of the bastion. Matched as whole identifiers that are
# not a field access (``.env`` is a field; ``env`` is the builtin).
_JQ_DENIED = re.compile(
    r"(?<![\w.])(?:env|ENV|import|include|modulemeta|get_search_list|get_jq_origin|"
    r"get_prog_origin)(?!\w)"
)


def _check_jq_filter(program: str) -> None:
    match = _JQ_DENIED.search(program)
    if match is not None:
        raise FilterRefusal(
            f"jq filter uses {match.group(0).strip()!r}, which can read the environment or "
            "files of the bastion"
        )


_GREP = FilterSpec(
    name="grep",
    short_bool=_letters("iyvcnowxEFGPqshHazlLbTZU"),
    short_value=_letters("eABCm"),
    long_bool=_names(
        "ignore-case no-ignore-case invert-match count line-number only-matching word-regexp "
        "line-regexp extended-regexp fixed-strings basic-regexp perl-regexp quiet silent "
        "no-filename with-filename text null-data line-buffered files-with-matches "
        "files-without-match byte-offset initial-tab null binary no-messages help version"
    ),
    long_value=_names("regexp after-context before-context context max-count label binary-files"),
    long_optional=_names("color colour"),
    forbidden={
        "-f": _READS_FILES,
        "--file": _READS_FILES,
        "-r": _READS_FILES,
        "--recursive": _READS_FILES,
        "-R": _READS_FILES,
        "--dereference-recursive": _READS_FILES,
        "-d": _READS_FILES,
        "--directories": _READS_FILES,
        "-D": _READS_FILES,
        "--devices": _READS_FILES,
        "--include": _READS_FILES,
        "--exclude": _READS_FILES,
        "--exclude-from": _READS_FILES,
        "--exclude-dir": _READS_FILES,
    },
    max_operands=1,
    operand_zero_with=frozenset({"-e", "--regexp"}),
    numeric_shorthand=True,
)

_HEAD_TAIL_LONG_BOOL = _names("quiet silent verbose zero-terminated help version")

_HEAD = FilterSpec(
    name="head",
    short_bool=_letters("qvz"),
    short_value=_letters("nc"),
    long_bool=_HEAD_TAIL_LONG_BOOL,
    long_value=_names("lines bytes"),
    numeric_shorthand=True,
)

_TAIL = FilterSpec(
    name="tail",
    short_bool=_letters("qvz"),
    short_value=_letters("nc"),
    long_bool=_HEAD_TAIL_LONG_BOOL,
    long_value=_names("lines bytes"),
    forbidden={
        "-f": "follows files",
        "-F": "follows files",
        "--follow": "follows files",
        "--pid": "watches other processes",
    },
    numeric_shorthand=True,
)

_WC = FilterSpec(
    name="wc",
    short_bool=_letters("cmlLw"),
    long_bool=_names("bytes chars lines max-line-length words help version"),
    long_value=_names("total"),
    forbidden={"--files0-from": _READS_FILES},
)

_SORT = FilterSpec(
    name="sort",
    short_bool=_letters("bdfghiMnRrsuVzcC"),
    short_value=_letters("kt"),
    long_bool=_names(
        "ignore-leading-blanks dictionary-order ignore-case general-numeric-sort "
        "human-numeric-sort ignore-nonprinting month-sort numeric-sort random-sort reverse "
        "stable unique version-sort zero-terminated help version"
    ),
    long_value=_names("key field-separator sort"),
    long_optional=_names("check"),
    forbidden={
        "-o": _WRITES_FILES,
        "--output": _WRITES_FILES,
        "-T": _WRITES_FILES,
        "--temporary-directory": _WRITES_FILES,
        "--compress-program": _RUNS_PROGRAMS,
        "--files0-from": _READS_FILES,
        "--random-source": _READS_FILES,
    },
)

_UNIQ = FilterSpec(
    name="uniq",
    short_bool=_letters("cdDuiz"),
    short_value=_letters("fsw"),
    long_bool=_names("count repeated unique ignore-case zero-terminated help version"),
    long_value=_names("skip-fields skip-chars check-chars"),
    long_optional=_names("all-repeated group"),
)

_CUT = FilterSpec(
    name="cut",
    short_bool=_letters("szn"),
    short_value=_letters("bcdf"),
    long_bool=_names("only-delimited complement zero-terminated help version"),
    long_value=_names("bytes characters delimiter fields output-delimiter"),
)

_JQ = FilterSpec(
    name="jq",
    short_bool=_letters("rjcsnRCMaSehV"),
    long_bool=_names(
        "raw-output join-output compact-output slurp null-input raw-input color-output "
        "monochrome-output ascii-output sort-keys exit-status tab seq stream stream-errors "
        "unbuffered raw-output0 help version"
    ),
    long_value=_names("indent"),
    long_pair=_names("arg argjson"),
    forbidden={
        "-f": _READS_FILES,
        "--from-file": _READS_FILES,
        "-L": _READS_FILES,
        "--rawfile": _READS_FILES,
        "--slurpfile": _READS_FILES,
        "--run-tests": _READS_FILES,
        "--args": "positional arguments after --args are not supported",
        "--jsonargs": "positional arguments after --jsonargs are not supported",
        "--": "jq versions disagree on '--'",
    },
    max_operands=1,
    gnu=False,
    check_operand=_check_jq_filter,
)

FILTERS: Mapping[str, FilterSpec] = {
    spec.name: spec for spec in (_GREP, _HEAD, _TAIL, _WC, _SORT, _UNIQ, _CUT, _JQ)
}


def check_filter(argv: tuple[str, ...]) -> None:
    """Check one filter stage (``argv[0]`` must be a key of :data:`FILTERS`).

    Raises :class:`FilterRefusal` with a user-facing reason.
    """
    spec = FILTERS.get(argv[0])
    if spec is None:
        raise FilterRefusal(f"{argv[0]!r} is not an allowed filter")
    _Checker(spec, argv[1:]).run()


class _Checker:
    def __init__(self, spec: FilterSpec, args: tuple[str, ...]) -> None:
        self.spec = spec
        self.args = args
        self.i = 0
        self.operands: list[str] = []
        self.no_operand = False

    def _refuse(self, detail: str) -> FilterRefusal:
        return FilterRefusal(f"{self.spec.name}: {detail}")

    def _take(self, option: str) -> str:
        if self.i >= len(self.args):
            raise self._refuse(f"option {option} needs a value")
        value = self.args[self.i]
        self.i += 1
        return value

    def run(self) -> None:
        spec = self.spec
        options_done = False
        while self.i < len(self.args):
            arg = self.args[self.i]
            self.i += 1
            if options_done or arg == "-" or not arg.startswith("-"):
                if arg == "-" and not spec.gnu:
                    raise self._refuse("a lone '-' argument is not supported")
                self.operands.append(arg)
                continue
            if arg in spec.forbidden:
                raise self._refuse(f"option {arg} is not allowed: {spec.forbidden[arg]}")
            if spec.gnu and self.operands:
                raise self._refuse(f"put options before operands (got {arg} after an operand)")
            if arg == "--":
                options_done = True
            elif arg.startswith("--"):
                self._long(arg)
            else:
                self._short(arg)
        self._check_operands()

    def _long(self, arg: str) -> None:
        spec = self.spec
        name, eq, value = arg[2:].partition("=")
        if f"--{name}" in spec.forbidden:
            raise self._refuse(f"option --{name} is not allowed: {spec.forbidden['--' + name]}")
        if name in spec.long_bool:
            if eq:
                raise self._refuse(f"option --{name} does not take a value")
        elif name in spec.long_value:
            if not eq:
                self._take(f"--{name}")
        elif name in spec.long_optional:
            pass
        elif name in spec.long_pair:
            if eq:
                raise self._refuse(f"option --{name} takes two separate arguments")
            self._take(f"--{name}")
            self._take(f"--{name}")
        else:
            raise self._refuse(
                f"option --{name} is not allowed (unknown or abbreviated; "
                "write allowed options in full)"
            )
        if f"--{name}" in spec.operand_zero_with:
            self.no_operand = True

    def _short(self, arg: str) -> None:
        spec = self.spec
        cluster = arg[1:]
        if spec.numeric_shorthand and cluster.isascii() and cluster.isdigit():
            return
        pos = 0
        while pos < len(cluster):
            letter = cluster[pos]
            pos += 1
            option = f"-{letter}"
            if option in spec.forbidden:
                raise self._refuse(f"option {option} is not allowed: {spec.forbidden[option]}")
            if option in spec.operand_zero_with:
                self.no_operand = True
            if letter in spec.short_bool:
                continue
            if letter in spec.short_value:
                if pos >= len(cluster):
                    self._take(option)
                return
            raise self._refuse(f"option {option} is not allowed")

    def _check_operands(self) -> None:
        spec = self.spec
        limit = 0 if self.no_operand else spec.max_operands
        if len(self.operands) > limit:
            extra = self.operands[limit]
            raise self._refuse(
                f"unexpected argument {extra!r}: filters read only their input "
                "(file arguments are not allowed)"
            )
        for operand in self.operands:
            spec.check_operand(operand)
