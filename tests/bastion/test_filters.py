from __future__ import annotations

import shlex

import pytest

from casemate.bastion.filters import FILTERS, FilterRefusal, check_filter


def check(line: str) -> None:
    check_filter(tuple(shlex.split(line)))


def refusal(line: str) -> str:
    with pytest.raises(FilterRefusal) as info:
        check(line)
    return str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        "grep error",
        "grep -i -v -n error",
        "grep -ivn error",
        "grep -e a -e b",
        "grep -A3 -B 2 --context=1 x",
        "grep -m1 x",
        "grep --color=always x",
        "grep --color x",
        "grep -E 'a|b'",
        "grep -c -- -x",
        "grep -5 x",
        "grep -",
        "head",
        "head -n 5",
        "head -n5",
        "head -20",
        "head --lines=3",
        "head -c 100",
        "tail -n +2",
        "tail -n -5",
        "tail --lines 3",
        "wc -l",
        "wc -lw --total=never",
        "sort",
        "sort -k2,2 -t, -rn",
        "sort -u --key=1 --field-separator=:",
        "sort -h -V -s",
        "sort --check=quiet",
        "uniq -c",
        "uniq -f 1 -s2 --all-repeated=separate",
        "cut -d: -f1",
        "cut -d ' ' -f 1-3 --output-delimiter=,",
        "jq .",
        "jq",
        "jq -r '.items[].metadata.name'",
        "jq -rc .",
        "jq '.items[]' -r",
        "jq --arg n web '.[] | select(.name == $n)'",
        "jq --argjson n 1 '.a + $n'",
        "jq --indent 4 .",
        "jq -S --tab .",
        "jq '.metadata.env'",
        "jq '.spec.template.spec.containers[].env'",
        "jq 'input_filename'",
        "jq '.environment'",
        "jq '{envs: .a}'",
    ],
)
def test_allowed(line: str):
    check(line)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("grep -f /etc/shadow", "reads files"),
        ("grep --file=/etc/shadow x", "reads files"),
        ("grep -r x /", "reads files"),
        ("grep -R x", "reads files"),
        ("grep -ir x", "reads files"),
        ("grep --include=*.key x", "reads files"),
        ("grep -d recurse x", "reads files"),
        ("grep x /etc/passwd", "file arguments"),
        ("grep -e x /etc/passwd", "file arguments"),
        ("grep x -r", "reads files"),
        ("grep x -i", "before operands"),
        ("grep --ign x", "unknown or abbreviated"),
        ("grep --ignore-case=yes x", "does not take a value"),
        ("grep -A", "needs a value"),
        ("grep -Q x", "-Q is not allowed"),
        ("head /etc/passwd", "file arguments"),
        ("head -n 1 /etc/passwd", "file arguments"),
        ("tail -f", "follows files"),
        ("tail -F x", "follows files"),
        ("tail --pid=1", "watches other processes"),
        ("wc --files0-from=/etc/x", "reads files"),
        ("wc -l /etc/passwd", "file arguments"),
        ("sort -o /tmp/x", "writes files"),
        ("sort -ro /tmp/x", "writes files"),
        ("sort --output=/tmp/x", "writes files"),
        ("sort -T /tmp", "writes files"),
        ("sort --compress-program=sh", "runs other programs"),
        ("sort --random-source=/dev/x", "reads files"),
        ("sort --files0-from=x", "reads files"),
        ("sort /etc/passwd", "file arguments"),
        ("uniq - /tmp/out", "file arguments"),
        ("uniq in out", "file arguments"),
        ("cut -f1 /etc/passwd", "file arguments"),
        ("jq env", "jq filter uses 'env'"),
        ("jq '.a | env.HOME'", "'env'"),
        ("jq '$ENV'", "'ENV'"),
        ("jq '$ENV.PATH'", "'ENV'"),
        ("jq '$ ENV'", "'ENV'"),
        ("jq '{$ENV}'", "'ENV'"),
        ("jq '\"\\(env)\"'", "'env'"),
        ("jq 'import \"a\" as $a; .'", "'import'"),
        ("jq 'include \"a\"; .'", "'include'"),
        ("jq 'modulemeta'", "'modulemeta'"),
        ("jq 'get_search_list'", "'get_search_list'"),
        ("jq -f /tmp/prog", "reads files"),
        ("jq -rf /tmp/prog", "reads files"),
        ("jq --from-file /tmp/prog", "reads files"),
        ("jq -L /tmp .", "reads files"),
        ("jq --rawfile a /etc/shadow .", "reads files"),
        ("jq --slurpfile a /etc/shadow .", "reads files"),
        ("jq --run-tests x", "reads files"),
        ("jq --args . a b", "--args"),
        ("jq --jsonargs . 1", "--jsonargs"),
        ("jq -- .", "disagree"),
        ("jq . /etc/passwd", "file arguments"),
        ("jq -", "lone '-'"),
        ("jq --arg n", "needs a value"),
        ("jq --arg=n v .", "two separate arguments"),
        ("jq -X .", "-X is not allowed"),
    ],
)
def test_refused(line: str, fragment: str):
    assert fragment in refusal(line)


def test_unknown_program():
    with pytest.raises(FilterRefusal, match="not an allowed filter"):
        check_filter(("awk", "1"))


def test_table_is_exactly_the_documented_tools():
    assert set(FILTERS) == {"grep", "head", "tail", "wc", "sort", "uniq", "cut", "jq"}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_forbidden_options_are_not_also_allowed(name: str):
    spec = FILTERS[name]
    for option in spec.forbidden:
        if option.startswith("--") and option != "--":
            assert option[2:] not in spec.long_bool | spec.long_value | spec.long_optional
        elif len(option) == 2:
            assert option[1] not in spec.short_bool | spec.short_value
