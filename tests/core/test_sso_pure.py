"""Pure single sign-on decisions: group mapping, usernames, ID token checks, PKCE."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from casemate.core.identity import Role
from casemate.core.sso.mapping import (
    MAX_GROUPS,
    casemate_username,
    check_mapping,
    entitlements,
    external_groups,
    password_login_allowed,
)
from casemate.core.sso.oidc import (
    MAX_TOKEN_LENGTH,
    check_id_token,
    identity_from_claims,
    pkce_challenge,
)
from casemate.errors import InvalidInput

ISS, CLIENT, NONCE, NOW = "https://idp.test", "casemate", "n-0123456789", 1_800_000_000


def test_entitlements_union_of_mapped_groups() -> None:
    ent = entitlements(
        frozenset({"admins", "staff", "unmapped"}),
        {"admins": ["admin"], "staff": ["operator"], "audit": ["auditor"]},
        {"staff": ["ops", "dev"], "audit": ["auditors"]},
    )
    assert ent.roles == {Role.ADMIN, Role.OPERATOR}
    assert ent.groups == {"ops", "dev"} and ent.managed_groups == {"ops", "dev", "auditors"}
    assert entitlements(frozenset(), {"a": ["admin"]}, {}).roles == frozenset()


def test_mapping_settings_are_checked() -> None:
    check_mapping({"a": ["admin"]}, {"a": ["ops"]})
    with pytest.raises(InvalidInput, match="unknown role"):
        check_mapping({"a": ["root"]}, {})
    with pytest.raises(InvalidInput):
        check_mapping({}, {"a": ["Bad Name"]})


@pytest.mark.parametrize(
    ("raw", "name"), [("Alice", "alice"), (" bob@corp.example ", "bob"), ("ｃａｒｏｌ", "carol")]
)
def test_usernames(raw: str, name: str) -> None:
    assert casemate_username(raw) == name


@pytest.mark.parametrize("raw", ["", "a b", "*", "x" * 65, "@corp", "ädmin", "root;--"])
def test_unusable_usernames_are_refused(raw: str) -> None:
    with pytest.raises(InvalidInput):
        casemate_username(raw)


def test_groups_are_strings_and_bounded() -> None:
    assert external_groups(["a", "b", "a"]) == {"a", "b"}
    for bad in ("admins", [1], [""], ["x" * 300], [f"g{i}" for i in range(MAX_GROUPS + 1)]):
        with pytest.raises(InvalidInput):
            external_groups(bad)  # type: ignore[arg-type]


def test_password_login_policy() -> None:
    assert password_login_allowed("dave", sso_required=False, break_glass=())
    assert not password_login_allowed("dave", sso_required=True, break_glass=("admin",))
    assert password_login_allowed("admin", sso_required=True, break_glass=("admin",))


def test_pkce_s256_is_the_unpadded_base64url_sha256() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjWgw-cM"
    digest = hashlib.sha256(verifier.encode()).digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert pkce_challenge(verifier) == expected and len(expected) == 43
    assert pkce_challenge(verifier + "x") != expected


KEY = ECKey.generate_key("P-256", parameters={"kid": "k1"})
OTHER = ECKey.generate_key("P-256", parameters={"kid": "k1"})  # same kid, different key
RSA = RSAKey.generate_key(2048, parameters={"kid": "r1"})
KEYS = KeySet([KEY, RSA])


def claims(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": ISS,
        "aud": CLIENT,
        "sub": "user-1",
        "exp": NOW + 600,
        "iat": NOW - 5,
        "nonce": NONCE,
        "preferred_username": "Dora",
        "email": "dora@example.org",
        "groups": ["staff"],
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(c: dict[str, Any], key: Any = KEY, alg: str = "ES256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, c, key)


def check(token: str) -> Any:
    return check_id_token(token, KEYS, issuer=ISS, client_id=CLIENT, nonce=NONCE, now=NOW)


def unsigned(c: dict[str, Any]) -> str:
    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(c)}."


def test_a_good_token_passes() -> None:
    result = check(sign(claims()))
    assert result.ok and result.claims["sub"] == "user-1"
    assert check(sign(claims(), RSA, "RS256")).ok
    assert check(sign(claims(aud=[CLIENT, "other"], azp=CLIENT))).ok
    ext = identity_from_claims(
        result.claims, provider="dex", username_claim="preferred_username", groups_claim="groups"
    )
    assert (ext.username, ext.subject, ext.groups, ext.method) == (
        "dora",
        "user-1",
        frozenset({"staff"}),
        "oidc",
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (sign(claims(), OTHER), "signature"),
        (unsigned(claims()), "signature"),
        (sign(claims(), OctKey.import_key(b"x" * 32, {"kid": "k1"}), "HS256"), "signature"),
        (sign(claims(iss="https://evil.test")), "another issuer"),
        (sign(claims(aud="other-client")), "another client"),
        (sign(claims(aud=[CLIENT, "other"])), "several clients"),
        (sign(claims(exp=NOW - 61)), "expired"),
        (sign(claims(exp=None)), "without expiry"),
        (sign(claims(exp="tomorrow")), "without expiry"),
        (sign(claims(iat=NOW + 3600)), "future"),
        (sign(claims(nonce="other")), "nonce"),
        (sign(claims(nonce=None)), "nonce"),
        (sign(claims(sub="")), "subject"),
        ("not-a-jwt", "signature"),
        ("a.b.c", "signature"),
        ("", "no ID token"),
        ("e" * (MAX_TOKEN_LENGTH + 1), "too large"),
    ],
)
def test_bad_tokens_are_refused_with_the_reason(token: str, reason: str) -> None:
    result = check(token)
    assert not result.ok and reason in result.reason and not result.claims


def test_the_expiry_leeway_is_one_minute() -> None:
    assert check(sign(claims(exp=NOW - 59))).ok
