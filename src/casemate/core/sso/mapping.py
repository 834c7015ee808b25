"""Pure decisions of single sign-on: who an external identity is in Casemate, and what it gets.

Nothing here does I/O. The inputs are frozen values from the directory or the ID token and
from the settings; the outputs are frozen values the identity service applies.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from casemate.core.identity import Role, parse_roles, validate_name
from casemate.errors import InvalidInput

#: The most groups an external identity may bring (more is refused as hostile input).
MAX_GROUPS = 500
_MAX_GROUP_NAME = 256
_SAFE_NAME = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class ExternalIdentity:
    """A person as a directory or an OpenID provider vouches for them."""

    provider: str  # the configured provider name, e.g. "ldap" or "dex"
    method: str  # "ldap" or "oidc"
    subject: str  # stable id at the provider: the entry DN, the ``sub`` claim
    username: str  # the proposed Casemate username (already normalised)
    display_name: str = ""
    email: str = ""
    groups: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Entitlements:
    """What an external identity's groups grant in Casemate."""

    roles: frozenset[Role]
    groups: frozenset[str]  # Casemate group names
    managed_groups: frozenset[str]  # every Casemate group the mapping may add or remove


def casemate_username(raw: str) -> str:
    """An external login name as a Casemate username (lowercase, ``[a-z0-9._-]``).

    The part before an ``@`` is kept for e-mail-like names; a name that still is not valid
    raises ``InvalidInput`` rather than being guessed into someone else's account.
    """
    name = unicodedata.normalize("NFKC", raw).strip().lower()
    if "@" in name:
        name = name.split("@", 1)[0]
    return validate_name(name)


def external_groups(values: Iterable[object]) -> frozenset[str]:
    """A groups claim or attribute as a set of names; refuses non-strings and huge lists."""
    if isinstance(values, str | bytes):
        raise InvalidInput("groups are a list of names")
    groups: set[str] = set()
    for v in values:
        if not isinstance(v, str) or not v or len(v) > _MAX_GROUP_NAME:
            raise InvalidInput("a group name is a non-empty string of at most 256 characters")
        groups.add(v)
        if len(groups) > MAX_GROUPS:
            raise InvalidInput(f"more than {MAX_GROUPS} groups")
    return frozenset(groups)


def entitlements(
    groups: frozenset[str],
    group_roles: Mapping[str, Sequence[str]],
    group_map: Mapping[str, Sequence[str]],
) -> Entitlements:
    """Roles and Casemate groups for ``groups`` (external names, matched exactly).

    ``group_roles`` maps an external group to Casemate role names; ``group_map`` to Casemate
    group names. Unknown role names in the settings are refused at start (see
    :func:`check_mapping`), so they never reach here.
    """
    roles: set[Role] = set()
    mapped: set[str] = set()
    for g in groups:
        roles |= parse_roles(group_roles.get(g, ()))
        mapped.update(group_map.get(g, ()))
    managed = frozenset(n for names in group_map.values() for n in names)
    return Entitlements(frozenset(roles), frozenset(mapped), managed)


def check_mapping(
    group_roles: Mapping[str, Sequence[str]], group_map: Mapping[str, Sequence[str]]
) -> None:
    """Refuse unknown role names and invalid Casemate group names in the settings."""
    for names in group_roles.values():
        parse_roles(names)
    for names in group_map.values():
        for n in names:
            validate_name(n, "group name")


def password_login_allowed(
    username: str, *, sso_required: bool, break_glass: Iterable[str]
) -> bool:
    """Whether a *local* password may log ``username`` in.

    With ``sso_required`` only the break-glass accounts keep their local passwords; everyone
    else logs in through the directory or the OpenID provider.
    """
    return not sso_required or username in set(break_glass)


def provider_label(name: str) -> str:
    """A provider name safe for audit records and URLs."""
    label = _SAFE_NAME.sub("-", name.strip().lower()).strip("-")
    return label[:64] or "sso"
