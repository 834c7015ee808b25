from __future__ import annotations

import pytest

from casemate.posture.manifests import Limits, LoadProblem, load_paths, parse_documents
from casemate.posture.model import Subject

POD = b"""apiVersion: v1
kind: Pod
metadata:
  name: web  # a comment
  namespace: shop
spec:
  hostPID: true
  containers:
  - name: app
    image: nginx
    securityContext:
      privileged: true
"""


def _parse(data: bytes, limits: Limits | None = None):
    return list(parse_documents(data, "m.yaml", limits or Limits()))


def _problems(items):
    return [i.message for i in items if isinstance(i, LoadProblem)]


def test_lines_of_fields_and_missing_fields():
    (subject,) = _parse(POD)
    assert isinstance(subject, Subject)
    line_of = subject.source.line_of
    assert line_of(("spec", "hostPID")) == 7
    assert line_of(("spec", "containers", 0, "securityContext", "privileged")) == 12
    assert line_of(("spec", "containers", 0, "securityContext", "runAsNonRoot")) == 11
    assert line_of(("spec", "containers", 3)) == 8


def test_multi_document_offsets_and_lists():
    data = (
        b"# leading comment\n---\n"
        + POD
        + b"---\n\n---\napiVersion: v1\nkind: List\nitems:\n- "
        + POD.replace(b"\n", b"\n  ").rstrip()
        + b"\n"
    )
    items = _parse(data)
    assert [type(i).__name__ for i in items] == ["Subject", "Subject"]
    first, second = items
    assert first.source.line_of(("spec", "hostPID")) == 9
    assert second.source.line_of(("spec", "hostPID")) == 27
    assert second.source.document == 2


def test_a_broken_document_does_not_hide_the_next():
    data = b"apiVersion: v1\nkind: Pod\nmetadata: {name: x\n---\n" + POD
    items = _parse(data)
    assert len(items) == 2
    assert isinstance(items[0], LoadProblem) and items[0].line == 4
    assert items[0].message.startswith("invalid YAML")
    assert isinstance(items[1], Subject) and items[1].source.line_of(("spec", "hostPID")) == 11


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x7fELF\x00\x00", "binary file"),
        ("kind: caf\xe9".encode("latin-1"), "not UTF-8"),
        (b"a: " + b"[" * 100_000, "invalid YAML"),
        (b"a: &a\n  b: *a\n", "recursive"),
        (b"- 1\n", "not a Kubernetes object"),
        (b"name: x\n", "no kind and apiVersion"),
        (
            b"apiVersion: acme.io/v1\nkind: Widget\nmetadata: {name: w}\n",
            "not a kind posture knows",
        ),
    ],
)
def test_bad_input_is_named(data, message):
    problems = _problems(_parse(data))
    assert len(problems) == 1 and message in problems[0], problems


def test_alias_bomb_is_refused_quickly():
    lines = [b"a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        b"a%d: &a%d [" % (i, i) + b", ".join([b"*a%d" % (i - 1)] * 10) + b"]" for i in range(1, 9)
    ]
    problems = _problems(_parse(b"\n".join(lines) + b"\n"))
    assert len(problems) == 1 and "YAML bomb" in problems[0]


def test_size_limit():
    assert "above the limit" in _problems(_parse(POD, Limits(max_bytes=10)))[0]


def test_empty_documents_are_nothing():
    assert _parse(b"") == [] and _parse(b"---\n---\n# only a comment\n") == []


def test_utf8_bom_and_json():
    assert isinstance(_parse(b"\xef\xbb\xbf" + POD)[0], Subject)
    assert isinstance(
        _parse(b'{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "j"}}')[0], Subject
    )


def test_folders(tmp_path):
    (tmp_path / "a.yaml").write_bytes(POD)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_bytes(b"{bad")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.yaml").write_bytes(POD)
    (tmp_path / "notes.txt").write_bytes(b"x")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2000)
    items = list(
        load_paths([str(tmp_path), str(tmp_path / "missing.yaml")], Limits(max_bytes=1000))
    )
    described = [i.describe() if isinstance(i, LoadProblem) else i.source.file for i in items]
    assert described[0] == str(tmp_path / "a.yaml")
    assert described[1].endswith("big.yaml: 2000 bytes, above the limit of 1000; not read")
    assert "b.yml:" in described[2] and "invalid YAML" in described[2]
    assert described[3].endswith("missing.yaml: no such file or folder")
    assert len(items) == 4


def test_duplicate_keys_are_refused_like_kubectl():
    data = POD.replace(
        b"      privileged: true\n", b"      privileged: true\n      privileged: false\n"
    )
    (problem,) = _parse(data)
    assert isinstance(problem, LoadProblem)
    assert "duplicate key 'privileged'" in problem.message and problem.line == 13


def test_yaml_1_1_booleans_as_kubectl_reads_them():
    (subject,) = _parse(POD.replace(b"privileged: true", b"privileged: yes"))
    assert subject.obj["spec"]["containers"][0]["securityContext"]["privileged"] is True
