"""The command policy in force, stored and versioned in the database.

Admins replace the bastion's command policy through the API (``/api/v1/policies/commands``) or
the CLI (``casemate policy import``); every gateway process reads it with
:meth:`PolicyStore.current`.

* **Versions.** Each change stores a new row of ``command_policies`` (the YAML exactly as
  submitted, its SHA-256, who stored it, a comment) with the next version number; rows are never
  updated or deleted, so the history is complete and any version can be exported again. The
  newest version is in force. Version 0 is the built-in default
  (:func:`casemate.bastion.policy.default_policy`): in force while nothing is stored, and what
  :meth:`PolicyStore.reset` stores again as a new version.
* **Validation.** :func:`validate_yaml` refuses, before anything is stored: text over
  :data:`MAX_POLICY_BYTES`, YAML aliases (``*name``: no alias bombs), more than one document, a
  root that is not a mapping, keys that are not plain text, nesting deeper than
  :data:`MAX_DEPTH`, everything :meth:`Policy.from_yaml <casemate.bastion.policy.Policy.from_yaml>`
  refuses (unknown keys, wrong types, unknown verbs, kinds, flags, groups, bad regular
  expressions, duplicate keys and rule ids) and a policy without enabled rules unless its
  ``default_action`` is ``reject`` (it would let everything through). Errors are
  :class:`InvalidPolicy` (a :class:`~casemate.errors.PolicyError`, HTTP 422) naming the line.
* **Audit.** A stored version and its :class:`~casemate.events.CommandPolicyChanged` record
  commit in one transaction. Storing the text already in force changes nothing and records
  nothing.
* **Caching.** :meth:`PolicyStore.current` keeps the parsed policy of the newest version and
  checks at most once per ``recheck_interval`` (1 s) whether a newer one was stored (one
  indexed query), so every process sees a change within about a second.
* **Fail closed.** A stored version that no longer validates, or whose text does not match its
  digest, is not replaced by anything more permissive: :meth:`~PolicyStore.current` raises
  :class:`~casemate.errors.PolicyError` until an admin stores a valid version, and callers deny.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import PurePosixPath
from typing import Any, Final

import yaml
from sqlalchemy import select
from sqlalchemy import text as sql
from sqlalchemy.exc import IntegrityError as DuplicateRow
from sqlalchemy.orm import defer

from casemate.bastion.inputs import label
from casemate.bastion.models import CommandPolicy
from casemate.bastion.policy import (
    REFUSED,
    CommandAction,
    CommandVerdict,
    Context,
    Policy,
    decide,
    default_policy,
)
from casemate.bastion.shell import ShellRefused, parse_line
from casemate.core.audit import AuditLog
from casemate.core.db import Database, is_postgres
from casemate.core.policyfile import StrictLoader
from casemate.core.records import record
from casemate.core.runtime import Runtime
from casemate.errors import Conflict, InvalidInput, NotFound, PolicyError, UpstreamError
from casemate.events import CommandPolicyChanged

__all__ = [
    "BUILTIN_VERSION",
    "MAX_DEPTH",
    "MAX_POLICY_BYTES",
    "RECHECK_SECONDS",
    "TEST_WORKSPACE",
    "CurrentPolicy",
    "InvalidPolicy",
    "PolicyInfo",
    "PolicyStore",
    "StoredPolicy",
    "check_line",
    "validate_yaml",
]

#: The largest policy accepted (UTF-8 bytes of the YAML text).
MAX_POLICY_BYTES: Final = 1024 * 1024
#: The deepest nesting of mappings and lists accepted (a policy needs about six levels).
MAX_DEPTH: Final = 16
#: How often :meth:`PolicyStore.current` looks for a newer version, in seconds.
RECHECK_SECONDS: Final = 1.0
#: The version number of the built-in default policy (never stored).
BUILTIN_VERSION: Final = 0
#: The workspace :func:`check_line` assumes, so that ``-f deploy.yaml`` is judged as in a
#: session (relative paths are inside it).
TEST_WORKSPACE: Final = PurePosixPath("/workspace")
MAX_HISTORY: Final = 1000
MAX_COMMENT_CHARS: Final = 1000
MAX_BY_CHARS: Final = 200
_ATTEMPTS: Final = 3
# Serializes policy writers on PostgreSQL (pg_advisory_xact_lock); any fixed 64-bit number.
_LOCK_KEY: Final = 0x63_6D_64_70_6F_6C  # "cmdpol"


class InvalidPolicy(PolicyError):
    """A policy text that cannot be stored; ``line`` (1-based) is where the problem is, when
    known."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class PolicyInfo:
    """One version of the command policy: ``version`` 0 is the built-in default (never stored,
    no ``created_at``)."""

    version: int
    digest: str
    created_at: datetime | None
    created_by: str
    comment: str

    @property
    def builtin(self) -> bool:
        return self.version == BUILTIN_VERSION


@dataclass(frozen=True)
class StoredPolicy:
    """A version with its YAML text."""

    info: PolicyInfo
    yaml: str


@dataclass(frozen=True)
class CurrentPolicy:
    """The version in force: its YAML and parsed policy, or (``policy`` None) why the stored
    text is unusable (``error``; decisions must then be denied)."""

    info: PolicyInfo
    yaml: str
    policy: Policy | None
    error: str = ""


# Validation -------------------------------------------------------------------------------


def validate_yaml(text: object, *, source: str = "policy") -> Policy:
    """The policy ``text`` describes, or :class:`InvalidPolicy` naming the line (see the module
    docstring for what is refused). Pure: nothing is stored."""
    if not isinstance(text, str):
        raise InvalidPolicy(f"{source}: a policy is YAML text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPolicy(f"{source}: the policy is not valid UTF-8 text") from None
    if size > MAX_POLICY_BYTES:
        raise InvalidPolicy(
            f"{source}: the policy is {size} bytes; at most {MAX_POLICY_BYTES} bytes (1 MiB) "
            "are allowed"
        )
    if not text.strip():
        raise InvalidPolicy(f"{source}: the policy is empty")
    _check_shape(text, source)
    try:
        policy = Policy.from_yaml(text, source=source)
    except PolicyError as exc:
        raise _located(exc.message, text, source) from None
    except (TypeError, ValueError, RecursionError) as exc:  # belt and braces: never a 500
        raise InvalidPolicy(f"{source}: the policy cannot be read ({type(exc).__name__})") from None
    if policy.default_action is not CommandAction.REJECT and not any(
        r.enabled for r in policy.rules
    ):
        line = _line_of_path(text, "default_action", "")
        where = f"{source}: line {line}" if line is not None else source
        raise InvalidPolicy(
            f"{where}: default_action: the policy has no enabled rules and its default_action "
            f"is {policy.default_action}, so it would not stop any command; add rules or use "
            "default_action: reject",
            line=line,
        )
    return policy


def _check_shape(text: str, source: str) -> None:
    """Walk the YAML events (no objects are built): refuse aliases, several documents, a root
    that is not a mapping, keys that are not scalars and deep nesting, each with its line."""

    def refuse(message: str, mark: Any) -> InvalidPolicy:
        line = None if mark is None else int(mark.line) + 1
        where = f"{source}: line {line}" if line is not None else source
        return InvalidPolicy(f"{where}: {message}", line=line)

    # one entry per open collection: [is a mapping, the next node is a key]
    stack: list[list[bool]] = []
    documents = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise refuse(
                    f"YAML aliases are not allowed in a policy (*{event.anchor})", event.start_mark
                )
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise refuse("a policy is a single YAML document", event.start_mark)
                continue
            if isinstance(event, yaml.NodeEvent):
                tag = getattr(event, "tag", None)
                if tag is not None and tag not in _PLAIN_TAGS and not _implicit(event):
                    raise refuse(f"YAML tags are not allowed in a policy ({tag})", event.start_mark)
                if not stack and isinstance(event, yaml.ScalarEvent) and event.value == "":
                    raise refuse("the policy is empty", event.start_mark)
                if not stack and not isinstance(event, yaml.MappingStartEvent):
                    raise refuse(
                        "a policy must be a mapping (version, default_action, groups, rules)",
                        event.start_mark,
                    )
                if stack and stack[-1][0]:
                    if stack[-1][1] and not isinstance(event, yaml.ScalarEvent):
                        raise refuse("mapping keys must be plain text", event.start_mark)
                    stack[-1][1] = not stack[-1][1]
                if isinstance(event, yaml.CollectionStartEvent):
                    if len(stack) >= MAX_DEPTH:
                        raise refuse(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
                    stack.append([isinstance(event, yaml.MappingStartEvent), True])
            elif isinstance(event, yaml.CollectionEndEvent) and stack:
                stack.pop()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        raise refuse(f"not valid YAML: {problem}", mark) from None
    except yaml.YAMLError as exc:
        raise InvalidPolicy(f"{source}: not valid YAML: {exc}") from None
    if documents == 0:
        raise InvalidPolicy(f"{source}: the policy is empty")


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "bool", "null", "float", "map", "seq")
)


def _implicit(event: yaml.NodeEvent) -> bool:
    """Whether the node's tag was resolved (not written in the text)."""
    implicit = getattr(event, "implicit", False)
    return any(implicit) if isinstance(implicit, tuple) else bool(implicit)


_LEADING_LINE = re.compile(r"line (\d+)\b")
_YAML_LINE = re.compile(r"line (\d+), column \d+")
_PATH = re.compile(r"([^\s:]+): (.*)", re.DOTALL)
_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_NAMED_KEY = re.compile(r"unknown (?:key|flag) (['\"])(.*?)\1")


def _located(message: str, text: str, source: str) -> InvalidPolicy:
    """``message`` (a PolicyError's, ``"<source>: <path>: <problem>"``) with the line added."""
    rest = message.removeprefix(f"{source}: ")
    leading = _LEADING_LINE.match(rest)
    if leading:  # the strict loader's duplicate keys
        return InvalidPolicy(message, line=int(leading.group(1)))
    in_yaml = _YAML_LINE.search(rest)
    if in_yaml:
        number = int(in_yaml.group(1))
        first = rest.split("\n", 1)[0]
        return InvalidPolicy(f"{source}: line {number}: {first}", line=number)
    path = _PATH.fullmatch(rest)
    line = _line_of_path(text, path.group(1) if path else "", rest)
    if line is None:
        return InvalidPolicy(message)
    return InvalidPolicy(f"{source}: line {line}: {rest}", line=line)


def _line_of_path(text: str, path: str, problem: str) -> int | None:
    """The line of the node at ``path`` (``rules[2].match.verbs[0]``), of the deepest node found
    on the way, or of the key an "unknown key" ``problem`` names."""
    try:
        node = yaml.compose(text, Loader=StrictLoader)  # safe: aliases and depth checked
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line + 1
    for step in _PATH_STEP.finditer(path):
        key, index = step.group(1), step.group(2)
        if index is not None:
            if not isinstance(node, yaml.SequenceNode) or int(index) >= len(node.value):
                break
            node = node.value[int(index)]
            line = node.start_mark.line + 1
            continue
        found = _value_of(node, key)
        if found is None:
            break
        key_node, node = found
        line = key_node.start_mark.line + 1
    named = _NAMED_KEY.search(problem)
    if named:
        found = _value_of(node, named.group(2))
        if found is not None:
            line = found[0].start_mark.line + 1
    return line


def _value_of(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


# Trying a command -------------------------------------------------------------------------


def check_line(
    policy: Policy,
    line: str,
    *,
    user: str,
    groups: Iterable[str] = (),
    cluster: str = "",
    account: str = "",
    namespace: str = "default",
) -> CommandVerdict:
    """What ``policy`` decides for ``line`` typed by ``user`` on ``cluster`` through
    ``account``, as in a session whose workspace is :data:`TEST_WORKSPACE`. A line the
    restricted shell refuses is a ``reject`` with rule id ``casemate.refused``."""
    try:
        parsed = parse_line(line)
    except ShellRefused as exc:
        return CommandVerdict(CommandAction.REJECT, REFUSED, exc.reason, stage=0)
    ctx = Context(
        user=user,
        groups=frozenset(groups),
        cluster=cluster,
        account=account,
        namespace_default=namespace or "default",
        workspace=TEST_WORKSPACE,
    )
    return decide(parsed, ctx, policy)


# The store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    """The newest version as read: ``key`` is its row id (0: the built-in default);
    ``policy`` is None when the stored text no longer validates (``error`` says why)."""

    key: int
    info: PolicyInfo
    yaml: str
    policy: Policy | None
    error: str = ""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _info(row: CommandPolicy) -> PolicyInfo:
    return record(PolicyInfo, row)


@lru_cache(maxsize=1)
def _builtin() -> _Loaded:
    policy = default_policy()
    text = policy.to_yaml()
    info = PolicyInfo(BUILTIN_VERSION, _digest(text), None, "", "built-in default")
    return _Loaded(0, info, text, policy)


class PolicyStore:
    """Stored versions of the command policy over a :class:`~casemate.core.db.Database`; see
    the module docstring. Thread-safe; methods are synchronous (the server runs them in its
    thread pool). ``clock`` is a monotonic clock in seconds (for tests)."""

    def __init__(
        self,
        db: Database,
        audit: AuditLog,
        *,
        recheck_interval: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.audit = audit
        self.recheck_interval = recheck_interval
        self._clock = clock
        self._postgres = is_postgres(db.engine)
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._checked_at = 0.0

    @classmethod
    def from_runtime(cls, runtime: Runtime) -> PolicyStore:
        return cls(runtime.db, runtime.audit)

    # Reading ------------------------------------------------------------------------------

    def current(self) -> Policy:
        """The policy in force (cached; a newer version is seen within ``recheck_interval``).
        Raises :class:`~casemate.errors.PolicyError` if the newest stored version is unusable:
        the caller must deny."""
        return self.current_with_info()[0]

    def current_with_info(self) -> tuple[Policy, PolicyInfo]:
        """:meth:`current` and the version it is (for audit records of decisions)."""
        loaded = self._snapshot(fresh=False)
        if loaded.policy is None:
            raise PolicyError(loaded.error)
        return loaded.policy, loaded.info

    def current_info(self) -> PolicyInfo:
        """The version in force now (version 0 for the built-in default)."""
        return self._snapshot(fresh=True).info

    def export(self) -> str:
        """The YAML of the version in force now (the built-in default's when none is stored)."""
        return self._snapshot(fresh=True).yaml

    def load(self) -> CurrentPolicy:
        """The version in force now, with its text and parsed policy (never raises for an
        unusable stored version: ``policy`` is then None and ``error`` says why)."""
        loaded = self._snapshot(fresh=True)
        return CurrentPolicy(loaded.info, loaded.yaml, loaded.policy, loaded.error)

    def history(self, limit: int = 100) -> list[PolicyInfo]:
        """Stored versions, newest first (the built-in default is not listed)."""
        if not 1 <= limit <= MAX_HISTORY:
            raise InvalidInput(f"limit must be between 1 and {MAX_HISTORY}")
        with self.db.reader() as s:
            rows = s.scalars(
                select(CommandPolicy)
                .options(defer(CommandPolicy.yaml))
                .order_by(CommandPolicy.version.desc())
                .limit(limit)
            ).all()
            return [_info(row) for row in rows]

    def get(self, version: int) -> StoredPolicy:
        """One version with its YAML; version 0 is the built-in default."""
        if version == BUILTIN_VERSION:
            builtin = _builtin()
            return StoredPolicy(builtin.info, builtin.yaml)
        with self.db.reader() as s:
            row = s.scalars(select(CommandPolicy).where(CommandPolicy.version == version)).first()
            if row is None:
                raise NotFound(f"there is no command policy version {version}")
            return StoredPolicy(_info(row), row.yaml)

    def get_version(self, version: int) -> str:
        """The YAML of one version (0: the built-in default)."""
        return self.get(version).yaml

    # Writing ------------------------------------------------------------------------------

    def put(
        self,
        yaml_text: str,
        *,
        by: str,
        comment: str = "",
        source: str = "",
        expected_version: int | None = None,
        check: Callable[[Policy], None] | None = None,
    ) -> PolicyInfo:
        """Validate ``yaml_text`` and store it as the next version, audited in the same
        transaction; returns the version now in force. Text identical to the version in force
        stores nothing. With ``expected_version``, refuse (``Conflict``) if another version
        is in force by now (no lost updates between editors). ``check`` validates what this
        module cannot (the ``api_rules`` section: the gateway's
        :func:`~casemate.gateway.apirules.check_api_rules`); a ``PolicyError`` from it is
        refused like any other. Raises :class:`InvalidPolicy` (nothing stored) or
        ``InvalidInput``."""
        label(by, "by", MAX_BY_CHARS, required=True, blank_is_empty=True)
        label(comment, "the comment", MAX_COMMENT_CHARS)
        policy = validate_yaml(yaml_text)
        if check is not None:
            try:
                check(policy)
            except InvalidPolicy:
                raise
            except PolicyError as e:
                raise _located(e.message, yaml_text, "policy") from None
        return self._store(
            yaml_text,
            policy,
            by=by,
            comment=comment,
            source=source,
            action="updated",
            expected_version=expected_version,
        )

    def reset(self, by: str, *, comment: str = "", source: str = "") -> PolicyInfo:
        """Go back to the built-in default by storing it as the next version."""
        label(by, "by", MAX_BY_CHARS, required=True, blank_is_empty=True)
        label(comment, "the comment", MAX_COMMENT_CHARS)
        builtin = _builtin()
        assert builtin.policy is not None
        return self._store(
            builtin.yaml,
            builtin.policy,
            by=by,
            comment=comment or "reset to the built-in default",
            source=source,
            action="reset",
        )

    def _store(
        self,
        text: str,
        policy: Policy,
        *,
        by: str,
        comment: str,
        source: str,
        action: str,
        expected_version: int | None = None,
    ) -> PolicyInfo:
        digest = _digest(text)
        for attempt in range(_ATTEMPTS):
            try:
                with self.db.session() as s:
                    if self._postgres:  # SQLite's BEGIN IMMEDIATE serializes writers already
                        s.execute(sql("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
                    latest = s.scalars(
                        select(CommandPolicy)
                        .options(defer(CommandPolicy.yaml))
                        .order_by(CommandPolicy.version.desc())
                        .limit(1)
                        .with_for_update()
                    ).first()
                    previous = _builtin().info if latest is None else _info(latest)
                    if expected_version is not None and previous.version != expected_version:
                        raise Conflict(
                            f"the command policy is at version {previous.version} now, not "
                            f"{expected_version}: export it again and reapply your change"
                        )
                    if previous.digest == digest:
                        return previous
                    row = CommandPolicy(
                        version=previous.version + 1,
                        yaml=text,
                        digest=digest,
                        created_at=datetime.now(UTC),
                        created_by=by,
                        comment=comment,
                    )
                    s.add(row)
                    # Flush first (a concurrent writer's version fails here), then lock the
                    # audit head: every writer takes its locks in the same order.
                    s.flush()
                    info = _info(row)
                    self.audit.append(
                        CommandPolicyChanged(
                            actor=by,
                            source=source,
                            outcome="success",
                            action=action,
                            version=info.version,
                            digest=digest,
                            previous_version=previous.version,
                            previous_digest=previous.digest,
                            rules=len(policy.rules),
                            default_action=str(policy.default_action),
                            comment=comment,
                        ),
                        session=s,
                    )
                    key = row.id
            except UpstreamError as exc:
                if isinstance(exc.__cause__, DuplicateRow) and attempt + 1 < _ATTEMPTS:
                    continue
                if isinstance(exc.__cause__, DuplicateRow):
                    raise Conflict(
                        "another change to the command policy was stored at the same time; "
                        "try again"
                    ) from None
                raise
            with self._lock:
                self._loaded = _Loaded(key, info, text, policy)
                self._checked_at = self._clock()
            return info
        raise AssertionError("unreachable")  # pragma: no cover

    # Cache --------------------------------------------------------------------------------

    def _snapshot(self, *, fresh: bool) -> _Loaded:
        now = self._clock()
        with self._lock:
            loaded, checked_at = self._loaded, self._checked_at
        if loaded is not None and not fresh and now - checked_at < self.recheck_interval:
            return loaded
        key = self._latest_key()
        if loaded is None or loaded.key != key:
            loaded = self._load_latest()
        with self._lock:
            self._loaded, self._checked_at = loaded, now
        return loaded

    def _latest_key(self) -> int:
        with self.db.reader() as s:
            key = s.scalar(select(CommandPolicy.id).order_by(CommandPolicy.version.desc()).limit(1))
        return 0 if key is None else int(key)

    def _load_latest(self) -> _Loaded:
        with self.db.reader() as s:
            row = s.scalars(
                select(CommandPolicy).order_by(CommandPolicy.version.desc()).limit(1)
            ).first()
            if row is None:
                return _builtin()
            key, info, text = row.id, _info(row), row.yaml
        source = f"command policy version {info.version}"
        if _digest(text) != info.digest:
            return _Loaded(key, info, text, None, f"{source} does not match its digest")
        try:
            policy = validate_yaml(text, source=source)
        except PolicyError as exc:
            return _Loaded(key, info, text, None, f"{exc.message} (store a valid version)")
        return _Loaded(key, info, text, policy)
