"""``casemate policy`` as a real process on a real data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from casemate.bastion.policy import default_policy
from casemate.bastion.policystore import PolicyStore
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from tests.cli.conftest import run_cli

POLICY = """\
# Team policy
version: 1
default_action: reject
rules:
  - id: read
    priority: 10
    action: accept
    description: Reading is fine.
    match:
      groups: [read-only]
  - id: no-namespace-deletes
    priority: 100
    action: reject
    description: Never delete namespaces.
    match:
      verbs: [delete]
      kinds: [namespaces]
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    open_runtime(load_settings(data_dir=d), create=True).close()
    return d


def store_of(data_dir: Path) -> tuple[PolicyStore, Runtime]:
    rt = open_runtime(load_settings(data_dir=data_dir), create=False)
    return PolicyStore.from_runtime(rt), rt


def test_show_the_builtin_default(data_dir: Path) -> None:
    r = run_cli("policy", "show", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "command policy version 0 (the built-in default)" in r.stdout
    assert f"{len(default_policy().rules)} rules" in r.stdout
    # the table lists rules in the order they are tried, highest priority first
    assert "k8s.delete-namespace" in r.stdout and "baseline.read-only" in r.stdout
    assert r.stdout.index("k8s.delete-namespace") < r.stdout.index("baseline.read-only")
    assert r.stdout.count("\n") > len(default_policy().rules)


def test_export_import_history_show_and_reset(data_dir: Path, tmp_path: Path) -> None:
    exported = tmp_path / "default.yaml"
    r = run_cli("policy", "export", "-o", str(exported), data_dir=data_dir)
    assert r.returncode == 0 and "exported version 0" in r.stderr
    assert exported.read_text() == default_policy().to_yaml()
    stdout = run_cli("policy", "export", data_dir=data_dir)
    assert stdout.stdout == default_policy().to_yaml()

    team = tmp_path / "team.yaml"
    team.write_text(POLICY)
    r = run_cli("policy", "import", str(team), "--comment", "team rules", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "stored as version 1" in r.stdout
    again = run_cli("policy", "import", str(team), data_dir=data_dir)
    assert again.returncode == 0 and "unchanged: version 1" in again.stdout

    show = run_cli("policy", "show", data_dir=data_dir)
    assert "command policy version 1" in show.stdout and "comment: team rules" in show.stdout
    assert "cli:" in show.stdout and "2 rules" in show.stdout
    assert show.stdout.index("no-namespace-deletes") < show.stdout.index("Reading is fine.")
    assert run_cli("policy", "export", data_dir=data_dir).stdout == POLICY

    r = run_cli("policy", "reset", "--yes", data_dir=data_dir)
    assert r.returncode == 0 and "version 2 is the built-in default" in r.stdout
    history = run_cli("policy", "history", data_dir=data_dir)
    assert history.returncode == 0
    rows = [line.strip("│ ") for line in history.stdout.splitlines()]
    assert [row.split()[0] for row in rows if row[:1].isdigit()] == ["2", "1"]
    assert any(row.startswith("2 *") for row in rows)  # in force
    assert "team rules" in history.stdout and "reset to the built-in default" in history.stdout
    old = run_cli("policy", "export", "--version", "1", data_dir=data_dir)
    assert old.stdout == POLICY
    missing = run_cli("policy", "export", "--version", "7", data_dir=data_dir)
    assert missing.returncode == 1 and "no command policy version 7" in missing.stderr

    store, rt = store_of(data_dir)
    try:
        changes = rt.audit.query(kind="bastion.policy.changed")
        assert [(e.details["action"], e.source) for e in changes] == [
            ("updated", "cli"),
            ("reset", "cli"),
        ]
        assert all(e.actor.startswith("cli") for e in changes)
        assert store.current() == default_policy()
    finally:
        rt.close()


def test_import_refuses_invalid_files_naming_file_and_line(data_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("verbs: [delete]", "verbs: [obliterate]"))
    r = run_cli("policy", "import", str(bad), data_dir=data_dir)
    assert r.returncode == 1
    assert f"casemate: error: {bad}: line 16: rules[1].match.verbs[0]" in r.stderr
    assert "Traceback" not in r.stderr
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [x, x]\nb: &b [*a, *a]\nversion: 1\nrules: *b\n")
    r = run_cli("policy", "import", str(bomb), data_dir=data_dir)
    assert r.returncode == 1 and "line 2: YAML aliases are not allowed" in r.stderr
    huge = tmp_path / "huge.yaml"
    huge.write_text("version: 1\n# " + "x" * (1024 * 1024) + "\n")
    r = run_cli("policy", "import", str(huge), data_dir=data_dir)
    assert r.returncode == 2 and "larger than 1048576 bytes" in r.stderr
    r = run_cli("policy", "import", str(tmp_path / "nope.yaml"), data_dir=data_dir)
    assert r.returncode == 2 and "cannot read" in r.stderr
    stdin = run_cli("policy", "import", "-", data_dir=data_dir, stdin="- just a list\n")
    assert stdin.returncode == 1 and "-: line 1: a policy must be a mapping" in stdin.stderr
    assert "version 0" in run_cli("policy", "show", data_dir=data_dir).stdout


def test_test_a_command_line(data_dir: Path, tmp_path: Path) -> None:
    r = run_cli("policy", "test", "--cluster", "prod", "--", "kubectl", "delete", "ns", "prod",
                data_dir=data_dir)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("reject (rule k8s.delete-namespace): ")
    r = run_cli("policy", "test", "--json", "--line", "kubectl get pods | grep web",
                data_dir=data_dir)  # fmt: skip
    doc = json.loads(r.stdout)
    assert doc["action"] == "accept" and doc["allowed"] is True and doc["policy_version"] == 0
    r = run_cli("policy", "test", "--line", "kubectl scale deploy web --replicas=0",
                data_dir=data_dir)  # fmt: skip
    assert r.stdout.startswith("review (rule k8s.scale-to-zero)") and "held" in r.stdout
    r = run_cli("policy", "test", "--line", "kubectl get pods && id", data_dir=data_dir)
    assert r.stdout.startswith("reject (rule casemate.refused)")
    team = tmp_path / "team.yaml"
    team.write_text(POLICY)
    r = run_cli("policy", "test", "--json", "-f", str(team), "--", "kubectl", "apply", "-f",
                "x.yaml", data_dir=data_dir)  # fmt: skip
    doc = json.loads(r.stdout)
    assert doc["action"] == "reject" and doc["rule_id"] is None and doc["policy_version"] is None
    neither = run_cli("policy", "test", data_dir=data_dir)
    assert neither.returncode == 2 and "--line" in neither.stderr
    both = run_cli("policy", "test", "--line", "kubectl get pods", "--", "kubectl", "version",
                   data_dir=data_dir)  # fmt: skip
    assert both.returncode == 2


def test_reset_asks_first(data_dir: Path) -> None:
    r = run_cli("policy", "reset", data_dir=data_dir, stdin="n\n")
    assert r.returncode == 1
    assert "version 0" in run_cli("policy", "show", data_dir=data_dir).stdout


def test_a_stored_policy_that_no_longer_validates_is_shown_as_unusable(data_dir: Path) -> None:
    store, rt = store_of(data_dir)
    try:
        store.put(POLICY, by="alice")
        with rt.db.engine.begin() as conn:
            conn.execute(text("UPDATE command_policies SET yaml = 'version: 1\n' || yaml"))
    finally:
        rt.close()
    r = run_cli("policy", "show", data_dir=data_dir)
    assert r.returncode == 1 and "UNUSABLE, every command is denied" in r.stderr
    assert "does not match its digest" in r.stderr
    t = run_cli("policy", "test", "--line", "kubectl get pods", data_dir=data_dir)
    assert t.returncode == 1 and "does not match its digest" in t.stderr


def test_api_rules_are_shown_and_imported_with_the_policy(data_dir: Path, tmp_path: Path) -> None:
    r = run_cli("policy", "api-rules", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "built-in;" not in r.stdout and "; built-in" in r.stdout
    assert "api.secret-read" in r.stdout and "api.pod-escape" in r.stdout
    site = POLICY + (
        "api_rules:\n  version: 1\n  rules:\n"
        "    - {id: site.x, priority: 2000, action: deny, match: {resources: [configmaps]}}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(site.replace("action: deny, match", "action: nope, match"))
    r = run_cli("policy", "import", str(bad), data_dir=data_dir)
    assert r.returncode == 1 and "nope" in r.stderr and "Traceback" not in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text(site)
    r = run_cli("policy", "import", str(good), data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    r = run_cli("policy", "api-rules", data_dir=data_dir)
    assert "built-in + api_rules" in r.stdout and "site.x" in r.stdout
    assert "api.secret-read" in r.stdout
