"""``casemate policy``: the bastion's command policy (from the server's host).

The CLI works on the installation's database directly; a running gateway sees a change within
about a second. Changes are audited with the actor ``cli:<login name>`` and source ``cli``.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from casemate.cli import policyparts as parts
from casemate.cli.common import DataDirOption, err, out, runtime
from casemate.cli.terminal import print_table, safe, when
from casemate.errors import CasemateError, InvalidInput

if TYPE_CHECKING:  # the policy store (SQLAlchemy, core runtime) loads when a command runs:
    # `casemate policy --help` stays fast
    from casemate.bastion.policy import Policy, Rule
    from casemate.bastion.policystore import PolicyInfo

app = typer.Typer(help="The bastion's command policy.", no_args_is_help=True)


def _by() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _describe(info: PolicyInfo) -> str:
    if info.builtin:
        return "version 0 (the built-in default)"
    return f"version {info.version}"


def _read(path: Path) -> str:
    from casemate.bastion.policystore import MAX_POLICY_BYTES
    from casemate.core.files import read_bounded

    data = read_bounded(path, MAX_POLICY_BYTES)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text") from None


def _order(policy: Policy) -> list[Rule]:
    """Rules in the order they are walked: priority, then severity, then file order."""
    from casemate.core.rulescope import rule_order

    return sorted(policy.rules, key=rule_order)


@app.command("show")
def show(data_dir: DataDirOption = None) -> None:
    """Show the policy in force and its rules, in the order they are tried."""
    from casemate.bastion.policystore import PolicyStore

    rt = runtime(data_dir)
    try:
        current = PolicyStore.from_runtime(rt).load()
    finally:
        rt.close()
    info = current.info
    lines = [f"command policy {_describe(info)}", f"sha256:  {info.digest}"]
    if not info.builtin:
        lines.append(f"stored:  {when(info.created_at)} by {info.created_by}")
    if info.comment:
        lines.append(f"comment: {info.comment}")
    for line in lines:
        out.print(safe(line), markup=False)
    policy = current.policy
    if policy is None:
        err.print(safe(f"UNUSABLE, every command is denied: {current.error}"), markup=False)
        raise typer.Exit(1)
    out.print(
        f"default: {policy.default_action} (when no rule matches); {len(policy.rules)} rules",
        markup=False,
    )
    table = Table("id", "priority", "action", "description")
    for rule in _order(policy):
        action = str(rule.action) if rule.enabled else f"{rule.action} (disabled)"
        cells = (rule.id, str(rule.priority), action, rule.description)
        table.add_row(*(Text(safe(c)) for c in cells))
    print_table(table, out)


@app.command("export")
def export(
    data_dir: DataDirOption = None,
    output: parts.OutputOption = None,
    version: parts.VersionOption = None,
) -> None:
    """Write the policy in force (or one version) as YAML."""
    from casemate.bastion.policystore import PolicyStore

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
    if parts.write_out(text, output):
        err.print(safe(f"exported {_describe(info)} to {output}"), markup=False)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="The policy (YAML), '-' for stdin.")],
    data_dir: DataDirOption = None,
    comment: Annotated[str, typer.Option(help="Why (kept with the version and audited).")] = "",
) -> None:
    """Validate a policy file and make it the policy in force (a new version)."""
    from casemate.bastion.policystore import MAX_POLICY_BYTES, PolicyStore, validate_yaml
    from casemate.gateway.apirules import check_api_rules

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
    from casemate.bastion.policystore import PolicyStore
    from casemate.gateway.apirules import effective_api_rules

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
    from casemate.bastion.policystore import PolicyStore

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
        cells = (f"{i.version}{mark}", when(i.created_at), i.created_by, i.digest[:12], i.comment)
        table.add_row(*(Text(safe(c)) for c in cells))
    print_table(table, out)


@app.command("test")
def test(
    words: parts.WordsArgument = None,
    line: parts.LineOption = None,
    data_dir: DataDirOption = None,
    user: Annotated[str, typer.Option(help="Who types it.")] = "test",
    group: parts.GroupOption = None,
    cluster: parts.ClusterOption = "",
    account: parts.AccountOption = "",
    namespace: parts.NamespaceOption = "default",
    file: parts.PolicyFileOption = None,
    as_json: parts.JsonOption = False,
) -> None:
    """Show what the policy decides for a command line; nothing runs.

    Example: casemate policy test --cluster prod -- kubectl delete ns shop
    """
    text = parts.command_line(words, line)
    from casemate.bastion.policystore import PolicyStore, check_line, validate_yaml

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
    doc = {
        "action": str(verdict.action),
        "allowed": verdict.allowed,
        "rule_id": verdict.rule_id,
        "reason": verdict.reason,
        "warnings": [{"rule_id": n.rule_id, "reason": n.reason} for n in verdict.warnings],
        "stage": verdict.stage,
        "policy_version": version,
    }
    if as_json:
        out.print(json.dumps(doc, ensure_ascii=False), markup=False)
    else:
        parts.print_verdict(doc, out)


@app.command("reset")
def reset(
    data_dir: DataDirOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    comment: Annotated[str, typer.Option(help="Why (kept with the version and audited).")] = "",
) -> None:
    """Go back to the built-in default policy (stored as a new version)."""
    if not yes and not typer.confirm("Replace the command policy with the built-in default?"):
        raise typer.Exit(1)
    from casemate.bastion.policystore import PolicyStore

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
