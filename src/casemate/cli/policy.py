"""``casemate policy``: the bastion's command policy (from the server's host).

The CLI works on the installation's database directly; a running gateway sees a change within
about a second. Changes are audited with the actor ``cli:<login name>`` and source ``cli``.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from casemate.bastion.policy import CommandAction, Policy, Rule
from casemate.bastion.policystore import (
    MAX_POLICY_BYTES,
    PolicyInfo,
    PolicyStore,
    check_line,
    validate_yaml,
)
from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.core.files import read_bounded
from casemate.errors import CasemateError, InvalidInput
from casemate.gateway.apirules import check_api_rules, effective_api_rules

app = typer.Typer(help="The bastion's command policy.", no_args_is_help=True)

# Everything but newline and tab that could drive the terminal (C0, DEL, C1), and the
# invisible format characters that could disguise text.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _safe(text: str) -> str:
    return _UNSAFE.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _describe(info: PolicyInfo) -> str:
    if info.builtin:
        return "version 0 (the built-in default)"
    return f"version {info.version}"


def _print_table(table: Table) -> None:
    """On a terminal, fit the table to it; piped, one line per row (grep-friendly)."""
    if out.is_terminal:
        out.print(table)
    else:
        Console(width=4096, highlight=False, soft_wrap=True).print(table)


def _read(path: Path) -> str:
    data = read_bounded(path, MAX_POLICY_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None


def _order(policy: Policy) -> list[Rule]:
    """Rules in the order they are walked: priority, then severity, then file order."""
    return sorted(policy.rules, key=lambda r: (-r.priority, -r.action.severity))


@app.command("show")
def show(data_dir: DataDirOption = None) -> None:
    """Show the policy in force and its rules, in the order they are tried."""
    rt = runtime(data_dir)
    try:
        current = PolicyStore.from_runtime(rt).load()
    finally:
        rt.close()
    info = current.info
    lines = [f"command policy {_describe(info)}", f"sha256:  {info.digest}"]
    if not info.builtin:
        lines.append(f"stored:  {_when(info.created_at)} by {info.created_by}")
    if info.comment:
        lines.append(f"comment: {info.comment}")
    for line in lines:
        out.print(_safe(line), markup=False)
    policy = current.policy
    if policy is None:
        err.print(_safe(f"UNUSABLE, every command is denied: {current.error}"), markup=False)
        raise typer.Exit(1)
    out.print(
        f"default: {policy.default_action} (when no rule matches); {len(policy.rules)} rules",
        markup=False,
    )
    table = Table("id", "priority", "action", "description")
    for rule in _order(policy):
        action = str(rule.action) if rule.enabled else f"{rule.action} (disabled)"
        cells = (rule.id, str(rule.priority), action, rule.description)
        table.add_row(*(Text(_safe(c)) for c in cells))
    _print_table(table)


@app.command("export")
def export(
    data_dir: DataDirOption = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="File (default stdout).")
    ] = None,
    version: Annotated[
        int | None,
        typer.Option("--version", help="An older version (0: the built-in default)."),
    ] = None,
) -> None:
    """Write the policy in force (or one version) as YAML."""
    rt = runtime(data_dir)
    try:
        store = PolicyStore.from_runtime(rt)
        if version is None:
            current = store.load()
            info, text = current.info, current.yaml
        else:
            stored = store.get(version)
            info, text = stored.info, stored.yaml
    finally:
        rt.close()
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"cannot write {output}: {e.strerror}") from None
    err.print(_safe(f"exported {_describe(info)} to {output}"), markup=False)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="The policy (YAML), '-' for stdin.")],
    data_dir: DataDirOption = None,
    comment: Annotated[str, typer.Option(help="Why (kept with the version and audited).")] = "",
) -> None:
    """Validate a policy file and make it the policy in force (a new version)."""
    text = sys.stdin.read(MAX_POLICY_BYTES + 1) if str(file) == "-" else _read(file)
    validate_yaml(text, source=str(file))  # errors name the file and the line
    rt = runtime(data_dir)
    try:
        store = PolicyStore.from_runtime(rt)
        before = store.current_info()
        info = store.put(text, by=_by(), comment=comment, source="cli", check=check_api_rules)
    finally:
        rt.close()
    if info.version == before.version:
        out.print(f"unchanged: {_describe(info)} is already this policy", markup=False)
    else:
        out.print(f"stored as version {info.version} (sha256 {info.digest})", markup=False)


@app.command("api-rules")
def api_rules(data_dir: DataDirOption = None) -> None:
    """The API proxy's rules in force (YAML): the built-in set with the policy's api_rules
    section merged over it. Change them with an api_rules section in 'policy import'."""
    rt = runtime(data_dir)
    try:
        current = PolicyStore.from_runtime(rt).load()
    finally:
        rt.close()
    if current.policy is None:
        raise CasemateError("the stored policy is unusable: every request is refused")
    rules = effective_api_rules(current.policy)
    source = "built-in" if current.policy.api_rules is None else "built-in + api_rules"
    out.print(f"# {_describe(current.info)}; {source}", markup=False)
    out.print(rules.to_yaml().rstrip("\n"), markup=False)


@app.command("history")
def history(
    data_dir: DataDirOption = None,
    limit: Annotated[int, typer.Option(help="At most this many (1-1000).")] = 50,
) -> None:
    """List the stored versions, newest first."""
    rt = runtime(data_dir)
    try:
        store = PolicyStore.from_runtime(rt)
        versions = store.history(limit)
        current = store.current_info()
    finally:
        rt.close()
    if not versions:
        out.print("no stored versions: the built-in default (version 0) is in force")
        return
    table = Table("version", "stored", "by", "sha256", "comment")
    for i in versions:
        mark = " *" if i.version == current.version else ""
        cells = (f"{i.version}{mark}", _when(i.created_at), i.created_by, i.digest[:12], i.comment)
        table.add_row(*(Text(_safe(c)) for c in cells))
    _print_table(table)


@app.command("test")
def test(
    words: Annotated[
        list[str] | None,
        typer.Argument(help="The command line, after `--` (words are joined with spaces)."),
    ] = None,
    line: Annotated[
        str | None, typer.Option("--line", "-l", help="The command line as one string.")
    ] = None,
    data_dir: DataDirOption = None,
    user: Annotated[str, typer.Option(help="Who types it.")] = "test",
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="A group of the user (repeat).")
    ] = None,
    cluster: Annotated[str, typer.Option(help="The cluster.")] = "",
    account: Annotated[str, typer.Option(help="The system account.")] = "",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Default namespace.")] = (
        "default"
    ),
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Try this policy file instead of the one in force."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Show what the policy decides for a command line; nothing runs.

    Example: casemate policy test --cluster prod -- kubectl delete ns shop
    """
    if (line is None) == (not words):
        raise InvalidInput("give the command line after `--` or with --line (one of them)")
    text = line if line is not None else " ".join(words or [])
    version: int | None = None
    if file is not None:
        policy = validate_yaml(_read(file), source=str(file))
    else:
        rt = runtime(data_dir)
        try:
            policy, info = PolicyStore.from_runtime(rt).current_with_info()
            version = info.version
        finally:
            rt.close()
    verdict = check_line(
        policy,
        text,
        user=user,
        groups=group or [],
        cluster=cluster,
        account=account,
        namespace=namespace,
    )
    if as_json:
        doc = {
            "action": str(verdict.action),
            "allowed": verdict.allowed,
            "rule_id": verdict.rule_id,
            "reason": verdict.reason,
            "warnings": [{"rule_id": n.rule_id, "reason": n.reason} for n in verdict.warnings],
            "stage": verdict.stage,
            "policy_version": version,
        }
        out.print(json.dumps(doc, ensure_ascii=False), markup=False)
        return
    rule = f" (rule {verdict.rule_id})" if verdict.rule_id else ""
    out.print(_safe(f"{verdict.action}{rule}: {verdict.reason}"), markup=False)
    for notice in verdict.warnings:
        out.print(_safe(f"  warning ({notice.rule_id}): {notice.reason}"), markup=False)
    if verdict.action is CommandAction.REVIEW:
        out.print("  the command would be held until an approver releases it", markup=False)


@app.command("reset")
def reset(
    data_dir: DataDirOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    comment: Annotated[str, typer.Option(help="Why (kept with the version and audited).")] = "",
) -> None:
    """Go back to the built-in default policy (stored as a new version)."""
    if not yes and not typer.confirm("Replace the command policy with the built-in default?"):
        raise typer.Exit(1)
    rt = runtime(data_dir)
    try:
        store = PolicyStore.from_runtime(rt)
        before = store.current_info()
        info = store.reset(_by(), comment=comment, source="cli")
    finally:
        rt.close()
    if info.version == before.version:
        out.print(f"unchanged: {_describe(info)} is already the built-in default", markup=False)
    else:
        out.print(f"reset: version {info.version} is the built-in default", markup=False)
