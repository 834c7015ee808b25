from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.bastion.shell import (
    MAX_LINE_BYTES,
    Command,
    ParsedLine,
    Redirect,
    ShellRefused,
    parse_line,
)
from casemate.errors import Denied


def argv(line: str) -> list[tuple[str, ...]]:
    return [stage.argv for stage in parse_line(line).stages]


def refusal(line: str) -> str:
    with pytest.raises(ShellRefused) as info:
        parse_line(line)
    return info.value.reason


# Accepted lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "kubectl get pods -n app -o wide",
            [("kubectl", "get", "pods", "-n", "app", "-o", "wide")],
        ),
        (
            "kubectl logs deploy/x -c y --tail=50 | grep error | head",
            [
                ("kubectl", "logs", "deploy/x", "-c", "y", "--tail=50"),
                ("grep", "error"),
                ("head",),
            ],
        ),
        ("  kubectl\tget   po  ", [("kubectl", "get", "po")]),
        ("kubectl get po|grep x|wc -l", [("kubectl", "get", "po"), ("grep", "x"), ("wc", "-l")]),
        ("'kubectl' get po", [("kubectl", "get", "po")]),
        ('"kubectl" get po', [("kubectl", "get", "po")]),
        ("kube''ctl get", [("kubectl", "get")]),
        ('kube""ctl get', [("kubectl", "get")]),
        ("k\\ubectl get", [("kubectl", "get")]),
        ("kubectl 'a b' \"c d\" e\\ f", [("kubectl", "a b", "c d", "e f")]),
        ("kubectl 'it'\\''s'", [("kubectl", "it's")]),
        ('kubectl "it\'s"', [("kubectl", "it's")]),
        ("kubectl '\"quoted\"'", [("kubectl", '"quoted"')]),
        ('kubectl "a\\"b" "c\\\\d" "e\\$f" "g\\`h"', [("kubectl", 'a"b', "c\\d", "e$f", "g`h")]),
        ('kubectl "a\\.b" "\\n"', [("kubectl", "a\\.b", "\\n")]),
        ("kubectl '' \"\" x", [("kubectl", "", "", "x")]),
        (
            "kubectl '$HOME' '`id`' '*' '~' '#' ';' '&' '|'",
            [
                ("kubectl", "$HOME", "`id`", "*", "~", "#", ";", "&", "|"),
            ],
        ),
        ("kubectl a#b x=y x!=y ! a!", [("kubectl", "a#b", "x=y", "x!=y", "!", "a!")]),
        (
            "kubectl -o 'jsonpath={.items[*].metadata.name}'",
            [
                ("kubectl", "-o", "jsonpath={.items[*].metadata.name}"),
            ],
        ),
        ('kubectl -p \'{"spec":{"replicas":0}}\'', [("kubectl", "-p", '{"spec":{"replicas":0}}')]),
        ("kubectl --x='{\"a\":1}'", [("kubectl", '--x={"a":1}')]),
        ("kubectl \"a\"'b'c", [("kubectl", "abc")]),
        ("kubectl get \\\npo", [("kubectl", "get", "po")]),
        ("kube\\\nctl get", [("kubectl", "get")]),
        ('kubectl "a\\\nb"', [("kubectl", "ab")]),
        ("kubectl get \\\n  po \\\n  -n x", [("kubectl", "get", "po", "-n", "x")]),
        ("kubectl get po é 中文 😀", [("kubectl", "get", "po", "é", "中文", "😀")]),
        ("helm ls -A", [("helm", "ls", "-A")]),
    ],
)
def test_accepted(line: str, expected: list[tuple[str, ...]]):
    assert argv(line) == expected


def test_parsed_line_model():
    parsed = parse_line("kubectl get 'a b' | grep -i x")
    assert isinstance(parsed, ParsedLine)
    assert parsed.line == "kubectl get 'a b' | grep -i x"
    assert parsed.first == Command(("kubectl", "get", "a b"))
    assert parsed.first.program == "kubectl"
    assert parsed.filters == (Command(("grep", "-i", "x")),)
    assert parsed.display() == "kubectl get 'a b' | grep -i x"
    with pytest.raises(AttributeError):
        parsed.line = "x"  # type: ignore[misc]


def test_refusal_is_a_denial():
    with pytest.raises(Denied) as info:
        parse_line("kubectl get po; id")
    assert info.value.status == 403
    assert str(info.value).startswith("command refused: ")


# Refused lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ("kubectl get po; id", "';'"),
        ("kubectl get po && id", "'&'"),
        ("kubectl get po || id", "'||'"),
        ("kubectl get po &", "background"),
        ("kubectl get po 2>&1", "file-descriptor redirections"),
        ("kubectl get po 2>/dev/null", "file-descriptor redirections"),
        ("kubectl get po>x", "put a blank before '>'"),
        ("kubectl get po >| x", "other than '> FILE'"),
        ("kubectl get po >& x", "other than '> FILE'"),
        ("kubectl get po >&2", "other than '> FILE'"),
        ("kubectl get po >>> x", "other than '> FILE'"),
        ("kubectl get po > >(id)", "only one redirection"),
        ("kubectl get po > x > y", "only one redirection"),
        ("kubectl get po > x y", "must end the line"),
        ("kubectl get po > x | grep a", "must end the line"),
        ("kubectl get po >", "no file name"),
        ("kubectl get po > ''", "empty file name"),
        ("> x kubectl get po", "must follow a command"),
        ("kubectl get po | > x", "must follow a command"),
        ("kubectl get po > $x", "expansions"),
        ("kubectl get po > x*", "glob"),
        ("kubectl get po &> x", "'&'"),
        ("kubectl get po < x", "redirections"),
        ("kubectl apply -f - <<EOF", "redirections"),
        ("kubectl apply -f - <<< x", "redirections"),
        ("kubectl get po |& grep x", "'|&'"),
        ("kubectl get $(id)", "expansions"),
        ("kubectl get $HOME", "expansions"),
        ("kubectl get ${HOME}", "expansions"),
        ("kubectl get $((1+1))", "expansions"),
        ("kubectl get $'\\x41'", "expansions"),
        ('kubectl get $"x"', "expansions"),
        ("kubectl get $", "expansions"),
        ('kubectl get "$HOME"', "inside double quotes"),
        ('kubectl get "`id`"', "backticks"),
        ("kubectl get `id`", "backticks"),
        ("kubectl apply -f <(id)", "redirections"),
        ("kubectl get >(id)", "redirections"),
        ("(kubectl get po)", "subshells"),
        ("{ kubectl get po; }", "braces"),
        ("kubectl get po*", "glob"),
        ("kubectl get po?", "glob"),
        ("kubectl get [p]o", "glob"),
        ("kubectl get {a,b}", "braces"),
        ("kubectl get ~", "tilde"),
        ("kubectl get x=~/a", "tilde"),
        ("kubectl get po # comment", "comments"),
        ("#kubectl", "comments"),
        ("A=1 kubectl get po", "assignments"),
        ("A+=1 kubectl get po", "assignments"),
        ("if kubectl get po", "keyword"),
        ("! kubectl get po", "keyword"),
        ("time kubectl get po", "keyword"),
        ("function f", "keyword"),
        ("kubectl get po\nid", "line break"),
        ("kubectl get po\\", "backslash"),
        ("kubectl 'a\nb'", "line break inside quotes"),
        ('kubectl "a\nb"', "line break inside quotes"),
        ("kubectl 'abc", "unbalanced single quote"),
        ('kubectl "abc', "unbalanced double quote"),
        ('kubectl "abc\\', "unbalanced double quote"),
        ("kubectl get po |", "ends with '|'"),
        ("| grep x", "empty command before '|'"),
        ("kubectl | | grep", "empty command before '|'"),
        ("kubectl get po\x00", "NUL"),
        ("kubectl get po\x1b[31m", "escape"),
        ("kubectl get po\r", "carriage return"),
        ("kubectl get po\x07", "U+0007"),
        ("kubectl get po\x7f", "U+007F"),
        ("kubectl get po\x9b", "U+009B"),
        ("kubectl get po\u200b", "U+200B"),
        ("kubectl get po\u202e", "U+202E"),
        ("kubectl\u00a0get po", "U+00A0"),
        ("kubectl get po\u2028", "U+2028"),
        ("kubectl get po\ufeff", "U+FEFF"),
        ("kubectl get po\ue000", "U+E000"),
        ("kubectl get po\ud800", "surrogate"),
        ("kubectl" + " " * MAX_LINE_BYTES, "longer than"),
        ("sh -c id", "'sh' is not allowed"),
        ("grep x", "must start with kubectl or helm"),
        ("kubectl-foo get", "'kubectl-foo' is not allowed"),
        ("KUBECTL get", "'KUBECTL' is not allowed"),
        ("/usr/bin/kubectl get", "paths"),
        ("./kubectl get", "paths"),
        ("кubectl get", "non-ASCII"),
        ("kubectl get po | sh", "'sh' is not allowed after '|'"),
        ("kubectl get po | kubectl delete -f -", "not allowed after '|'"),
        ("kubectl get po | /usr/bin/grep x", "paths"),
        ("kubectl get po | awk 1", "'awk'"),
        ("kubectl get po | sed 1d", "'sed'"),
        ("kubectl get po | tee x", "'tee'"),
        ("kubectl get po | xargs id", "'xargs'"),
        ("kubectl get po | grep x /etc/passwd", "file arguments"),
        ("kubectl get po | jq env", "jq filter"),
    ],
)
def test_refused(line: str, fragment: str):
    assert fragment in refusal(line)


def test_length_cap_counts_utf8_bytes():
    prefix = "kubectl get "
    fits = prefix + "a" * (MAX_LINE_BYTES - len(prefix))
    assert parse_line(fits).first.argv[-1] == "a" * (MAX_LINE_BYTES - len(prefix))
    assert "longer than" in refusal(fits + "a")
    # é is two bytes in UTF-8: half as many fit
    assert "longer than" in refusal(prefix + "é" * (MAX_LINE_BYTES // 2))


def test_bashlex_disagreement_is_refused(monkeypatch: pytest.MonkeyPatch):
    from casemate.bastion import shell

    monkeypatch.setattr(shell, "_bashlex_words", lambda line: None)
    assert "ambiguous" in refusal("kubectl get po")

    def words(
        *items: tuple[int, int, str, bool], redirect: tuple[int, int, str, bool] | None = None
    ) -> object:
        return lambda line: ([list(items)], redirect)

    monkeypatch.setattr(shell, "_bashlex_words", words((0, 7, "kubectl", False)))
    assert "ambiguous" in refusal("kubectl get")  # a word missing
    monkeypatch.setattr(
        shell, "_bashlex_words", words((0, 7, "kubectl", False), (8, 11, "xxx", False))
    )
    assert "ambiguous" in refusal("kubectl get")  # another value
    monkeypatch.setattr(
        shell, "_bashlex_words", words((0, 7, "kubectl", False), (8, 10, "get", False))
    )
    assert "ambiguous" in refusal("kubectl get")  # other boundaries
    monkeypatch.setattr(
        shell, "_bashlex_words", words((0, 7, "kubectl", False), (8, 11, "get", True))
    )
    assert "ambiguous" in refusal("kubectl get")  # bashlex sees an expansion
    # in a word with quotes only the boundaries count (bashlex cannot unquote it)
    monkeypatch.setattr(
        shell, "_bashlex_words", words((0, 7, "kubectl", False), (8, 15, "zz", True))
    )
    assert parse_line("kubectl a'b'\"c\"").first.argv == ("kubectl", "abc")
    # the redirection target: bashlex must see one, at the same place
    monkeypatch.setattr(shell, "_bashlex_words", words((0, 7, "kubectl", False)))
    assert "ambiguous" in refusal("kubectl > x")
    monkeypatch.setattr(
        shell,
        "_bashlex_words",
        words((0, 7, "kubectl", False), redirect=(11, 12, "y", False)),
    )
    assert "ambiguous" in refusal("kubectl > x")
    monkeypatch.setattr(
        shell,
        "_bashlex_words",
        words((0, 7, "kubectl", False), redirect=(10, 11, "x", False)),
    )
    assert parse_line("kubectl > x").redirect == Redirect("x")


def test_bashlex_redirections_other_than_a_final_output_are_refused():
    from casemate.bastion.shell import _bashlex_words

    assert _bashlex_words("kubectl get po > x") == (
        [[(0, 7, "kubectl", False), (8, 11, "get", False), (12, 14, "po", False)]],
        (17, 18, "x", False),
    )
    for line in (
        "kubectl get po 2> x",
        "kubectl get po < x",
        "kubectl get po > x | wc",
        "kubectl get po >| x",
    ):
        assert _bashlex_words(line) is None, line


@pytest.mark.parametrize(
    ("line", "argv", "redirect", "display"),
    [
        ("kubectl get po > out.txt", ("kubectl", "get", "po"), Redirect("out.txt"), None),
        (
            "kubectl get po >out.txt",
            ("kubectl", "get", "po"),
            Redirect("out.txt"),
            "kubectl get po > out.txt",
        ),
        (
            "helm get values x >> v.yaml",
            ("helm", "get", "values", "x"),
            Redirect("v.yaml", append=True),
            None,
        ),
        ("kubectl get po | grep a > 'my file'", ("grep", "a"), Redirect("my file"), None),
        (
            "kubectl get po > dir/a.yaml  ",
            ("kubectl", "get", "po"),
            Redirect("dir/a.yaml"),
            "kubectl get po > dir/a.yaml",
        ),
        (
            "kubectl get po > /etc/x",
            ("kubectl", "get", "po"),
            Redirect("/etc/x"),
            None,
        ),  # the driver refuses it
    ],
)
def test_output_redirection_at_the_end(
    line: str, argv: tuple[str, ...], redirect: Redirect, display: str | None
):
    parsed = parse_line(line)
    assert parsed.stages[-1].argv == argv
    assert parsed.redirect == redirect
    assert parsed.display() == (display or line)
    assert parse_line("kubectl get po").redirect is None


def test_bashlex_exceptions_become_refusals(monkeypatch: pytest.MonkeyPatch):
    import bashlex

    def boom(_line: str) -> None:
        raise RecursionError("deep")

    monkeypatch.setattr(bashlex, "parse", boom)
    assert "ambiguous" in refusal("kubectl get po")


# Filters ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "kubectl get po | grep -i error | head -n 5",
        "kubectl get po | grep -v -e Running -e Completed",
        "kubectl get po | grep -E 'a|b' | sort -k2 -r | uniq -c | wc -l",
        "kubectl get po | tail -n +2 | cut -d ' ' -f1",
        "kubectl get po -o json | jq -r '.items[].metadata.name' | sort -u",
        "kubectl get po -o json | jq '.items[] | select(.metadata.labels.env == \"prod\")'",
        "kubectl get po -o json | jq --arg n web '.items[] | select(.metadata.name == $n)'",
        "kubectl get po -o json | jq -c 'input_filename'",
        "kubectl logs x | grep -C3 -- -error-",
        "kubectl logs x | head -100",
    ],
)
def test_filters_accepted(line: str):
    assert len(parse_line(line).stages) > 1


# Properties ------------------------------------------------------------------------------------


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300))
def test_random_text_never_crashes(line: str):
    try:
        parsed = parse_line(line)
    except ShellRefused:
        return
    assert parsed.first.program in ("kubectl", "helm")


_SHELLY = st.sampled_from(
    list("ab-=.:/,'\"\\|;&<>()*?[]{}~#!$` \t\né") + ["\\\n", "kubectl", "|grep x"]
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_SHELLY, max_size=40).map("".join))
def test_shell_metacharacter_soup_never_crashes(text: str):
    try:
        parse_line("kubectl " + text)
    except ShellRefused:
        pass


# Differential test against bash ---------------------------------------------------------------

BASH = shutil.which("bash")
_WORD_ALPHABET = st.characters(
    codec="utf-8",
    categories=("L", "N", "P", "S"),
    include_characters=" \t",
    exclude_characters="\x00",
)


def bash_argv(line: str, cwd: Path, redirect: Redirect | None = None) -> list[str]:
    """The arguments bash passes to a function named kubectl for this line (read from the file
    the line redirects into, which must be a plain name: bash runs it in a fresh directory)."""
    script = 'kubectl() { printf \'%s\\0\' "$#" "$@"; }\n' + line
    workdir = Path(tempfile.mkdtemp(dir=cwd))
    result = subprocess.run(
        [BASH or "bash", "--norc", "--noprofile", "-c", script],
        capture_output=True,
        cwd=workdir,
        env={"PATH": "", "LC_ALL": "C.UTF-8"},
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout
    if redirect is not None:
        assert output == b""
        output = (workdir / redirect.path).read_bytes()
    count, *args = output.decode("utf-8").split("\0")[:-1]
    assert len(args) == int(count)
    return args


@st.composite
def quoted_word(draw: st.DrawFn) -> tuple[str, str]:
    """(value, a bash spelling of it)."""
    value = draw(st.text(_WORD_ALPHABET, max_size=12))
    pieces: list[str] = []
    rest = value
    while rest or not pieces:
        size = draw(st.integers(0, len(rest)))
        chunk, rest = rest[:size], rest[size:]
        style = draw(st.sampled_from(["single", "double", "escape", "quote"]))
        if style == "single":
            pieces.append("'" + chunk.replace("'", "'\\''") + "'")
        elif style == "double":
            pieces.append('"' + "".join("\\" + c if c in '"\\$`' else c for c in chunk) + '"')
        elif style == "escape" and chunk:
            pieces.append("".join(c if c.isalnum() else "\\" + c for c in chunk))
        else:
            pieces.append(shlex.quote(chunk))
        if not rest:
            break
    return value, "".join(pieces)


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(quoted_word(), max_size=6))
def test_quoted_words_parse_like_bash(
    tmp_path_factory: pytest.TempPathFactory, words: list[tuple[str, str]]
):
    line = "kubectl " + " ".join(spelling for _, spelling in words)
    try:
        parsed = parse_line(line)
    except ShellRefused as exc:
        # bashlex fails on some exotic mixes (a backtick inside single quotes after other
        # quotes); the cross-check then refuses, which is the fail-closed outcome
        assert "ambiguous" in exc.reason
        return
    expected = [value for value, _ in words]
    assert list(parsed.first.argv[1:]) == expected
    assert bash_argv(line, tmp_path_factory.getbasetemp()) == expected


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(_SHELLY, max_size=30).map("".join))
def test_whatever_the_shell_accepts_bash_reads_the_same(
    tmp_path_factory: pytest.TempPathFactory, text: str
):
    line = "kubectl " + text
    try:
        parsed = parse_line(line)
    except ShellRefused:
        return
    if len(parsed.stages) != 1 or not _plain_name(parsed.redirect):
        return
    got = bash_argv(line, tmp_path_factory.getbasetemp(), parsed.redirect)
    assert got == list(parsed.first.argv[1:])


def _plain_name(redirect: Redirect | None) -> bool:
    """No redirection, or one into a plain file name (safe to let bash write it)."""
    if redirect is None:
        return True
    name = redirect.path
    return "/" not in name and name not in (".", "..") and len(name.encode()) < 200


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(quoted_word(), min_size=1, max_size=3), quoted_word(), st.booleans())
def test_redirection_targets_parse_like_bash(
    tmp_path_factory: pytest.TempPathFactory,
    words: list[tuple[str, str]],
    target: tuple[str, str],
    append: bool,
):
    op = ">>" if append else ">"
    line = "kubectl " + " ".join(spelling for _, spelling in words) + f" {op} {target[1]}"
    try:
        parsed = parse_line(line)
    except ShellRefused as exc:
        assert "ambiguous" in exc.reason or "empty file name" in exc.reason
        return
    assert parsed.redirect == Redirect(target[0], append=append)
    expected = [value for value, _ in words]
    assert list(parsed.first.argv[1:]) == expected
    if _plain_name(parsed.redirect):
        assert bash_argv(line, tmp_path_factory.getbasetemp(), parsed.redirect) == expected
