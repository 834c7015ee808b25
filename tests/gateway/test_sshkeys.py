"""Users' SSH keys: validation of what is accepted (and hostile input), the service on a real
database (audit, permissions, uniqueness, cascade, key logins), the schema, and the pure
helpers of the SSH entry."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import given
from hypothesis import strategies as st

from casemate.core.db import Base
from casemate.core.identity import Principal
from casemate.core.runtime import Runtime, open_runtime
from casemate.core.settings import load_settings
from casemate.errors import (
    AuthenticationFailed,
    ConfigError,
    Conflict,
    Denied,
    InvalidInput,
    NotFound,
)
from casemate.gateway.ssh import load_or_create_host_key, split_username
from casemate.gateway.sshkeys import (
    ALLOWED_KEY_TYPES,
    SshKeys,
    fingerprint_of,
    parse_public_key,
)
from tests.gateway.conftest import PASSWORD, principal

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def openssh(key: PrivateKey, comment: str = "me@laptop") -> str:
    text = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{text} {comment}".strip()


def ed25519_key() -> str:
    return openssh(ed25519.Ed25519PrivateKey.generate())


# Validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "algorithm", "bits"),
    [
        (ed25519.Ed25519PrivateKey.generate, "ssh-ed25519", 256),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ecdsa-sha2-nistp256", 256),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ecdsa-sha2-nistp384", 384),
        (lambda: ec.generate_private_key(ec.SECP521R1()), "ecdsa-sha2-nistp521", 521),
        (lambda: rsa.generate_private_key(65537, 3072), "ssh-rsa", 3072),
    ],
)
def test_strong_key_types_are_accepted(make: object, algorithm: str, bits: int) -> None:
    key = make()  # type: ignore[operator]
    text = openssh(key, "alice@laptop")
    parsed = parse_public_key(f"# my key\n\n{text}\n")
    assert (parsed.algorithm, parsed.bits, parsed.comment) == (algorithm, bits, "alice@laptop")
    assert parsed.openssh == " ".join(text.split()[:2])
    assert parsed.fingerprint == fingerprint_of(parsed.blob)


def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path) -> None:
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shown = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(key) + ".pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert parse_public_key((tmp_path / "id.pub").read_text()).fingerprint == shown


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no public key given"),
        ("# only a comment\n\n", "no public key given"),
        ("hello world", "not an OpenSSH public key"),
        ("ssh-ed25519", "key data is missing"),
        ("ssh-ed25519 !!!not-base64!!!", "not valid base64"),
        ("ssh-ed25519 AAAA", "does not match the key type"),
        ("ssh-foo AAAAB3NzaC1yc2E=", "not accepted"),
        ("ssh-ed25519-cert-v01@openssh.com AAAA me", "certificates are not supported"),
        ("sk-ssh-ed25519@openssh.com AAAA me", "security-key"),
        ("ssh-ed25519 AAAA\u202e me", "unexpected characters"),
        ("ssh-ed25519 AAAA\x1b[2J", "unexpected characters"),
        ("---- BEGIN SSH2 PUBLIC KEY ----\nAAAA\n---- END SSH2 PUBLIC KEY ----", "RFC 4716"),
        ("x" * 20000, "too long"),
    ],
)
def test_garbage_is_refused_with_a_clear_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_public_key(text)


def test_weak_and_mismatched_keys_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least 3072 bits .this one has 2048"):
        parse_public_key(openssh(rsa.generate_private_key(65537, 2048)))
    with pytest.raises(InvalidInput, match="DSA keys are refused"):
        parse_public_key("ssh-dss AAAAB3NzaC1kc3MAAACBAP8= old@box")
    p256 = openssh(ec.generate_private_key(ec.SECP256R1())).split()
    with pytest.raises(InvalidInput, match="does not match"):
        parse_public_key(f"ecdsa-sha2-nistp384 {p256[1]}")
    ed = ed25519_key().split()
    with pytest.raises(InvalidInput, match="does not match"):
        parse_public_key(f"ssh-rsa {ed[1]}")
    truncated = base64.b64encode(base64.b64decode(ed[1])[:-4]).decode()
    with pytest.raises(InvalidInput, match="malformed"):
        parse_public_key(f"ssh-ed25519 {truncated}")


def test_private_keys_options_and_several_keys_are_refused() -> None:
    private = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption())
        .decode()
    )
    with pytest.raises(InvalidInput, match="private key"):
        parse_public_key(private)
    key = ed25519_key()
    with pytest.raises(InvalidInput, match="options before the key"):
        parse_public_key(f'from="10.0.0.0/8" {key}')
    with pytest.raises(InvalidInput, match="options before the key"):
        parse_public_key(f'command="ls -l",no-pty {key}')
    with pytest.raises(InvalidInput, match="one public key at a time"):
        parse_public_key(f"{key}\n{ed25519_key()}\n")


@given(st.text(max_size=300))
def test_any_text_is_a_key_or_invalid_input(text: str) -> None:
    try:
        parsed = parse_public_key(text)
    except InvalidInput:
        return
    assert parsed.algorithm in ALLOWED_KEY_TYPES  # pragma: no cover - random text is no key


@given(st.sampled_from(ALLOWED_KEY_TYPES), st.binary(max_size=600))
def test_any_key_data_is_a_key_or_invalid_input(algorithm: str, blob: bytes) -> None:
    text = f"{algorithm} {base64.b64encode(blob).decode()}"
    with pytest.raises(InvalidInput):
        parse_public_key(text)


# The service -----------------------------------------------------------------------------------


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(
        data_dir=tmp_path / "data", admin_password=PASSWORD, sqlite_synchronous="NORMAL"
    )
    runtime = open_runtime(settings, create=True)
    runtime.identity.ensure_first_admin(settings)
    admin = principal(runtime, "admin")
    runtime.identity.create_user("alice", by=admin, password=PASSWORD, roles=["operator"])
    runtime.identity.create_user("bob", by=admin, password=PASSWORD, roles=["operator"])
    try:
        yield runtime
    finally:
        runtime.close()


def events(rt: Runtime, kind: str) -> list[dict[str, object]]:
    return [
        {"actor": e.actor, "outcome": e.outcome, **e.details}
        for e in rt.audit.query(kind=kind, limit=1000)
    ]


def test_keys_are_added_listed_and_removed_with_audit(rt: Runtime) -> None:
    keys = SshKeys(rt.db, rt.audit, rt.identity)
    alice = principal(rt, "alice")
    text = ed25519_key()
    added = keys.add_key("alice", text, by=alice)
    assert added.name == "me@laptop"  # the comment by default
    other = keys.add_key("alice", ed25519_key(), by=None, name="  ci runner ")
    assert other.name == "ci runner"
    assert [k.fingerprint for k in keys.list_keys("alice")] == [
        added.fingerprint,
        other.fingerprint,
    ]
    assert keys.list_keys("bob") == []
    removed = keys.remove_key("alice", added.fingerprint.removeprefix("SHA256:"), by=alice)
    assert removed.fingerprint == added.fingerprint
    with pytest.raises(NotFound):
        keys.remove_key("alice", added.fingerprint, by=alice)
    assert [k.name for k in keys.list_keys("alice")] == ["ci runner"]
    changes = events(rt, "identity.ssh_key")
    assert [(c["actor"], c["action"], c["username"], c["fingerprint"]) for c in changes] == [
        ("alice", "added", "alice", added.fingerprint),
        ("system", "added", "alice", other.fingerprint),
        ("alice", "removed", "alice", added.fingerprint),
    ]
    assert changes[0]["algorithm"] == "ssh-ed25519"
    assert text.split()[1] not in str(changes)  # fingerprints only


def test_a_key_opens_one_account_and_only_its_owner_or_an_admin_manage_it(rt: Runtime) -> None:
    keys = SshKeys(rt.db, rt.audit, rt.identity)
    text = ed25519_key()
    with pytest.raises(Denied):
        keys.add_key("alice", text, by=principal(rt, "bob"))
    info = keys.add_key("alice", text, by=principal(rt, "admin"))
    with pytest.raises(Conflict, match="already registered"):
        keys.add_key("bob", text, by=None)
    with pytest.raises(Conflict, match="already registered"):
        keys.add_key("alice", text + " again", by=None)
    with pytest.raises(Denied):
        keys.remove_key("alice", info.fingerprint, by=principal(rt, "bob"))
    with pytest.raises(NotFound):
        keys.add_key("nobody", ed25519_key(), by=None)
    with pytest.raises(InvalidInput, match="name"):
        keys.add_key("alice", ed25519_key(), by=None, name="bad\x1bname")
    rt.identity.update_user("bob", by=None, disabled=True)
    with pytest.raises(Conflict, match="disabled"):
        keys.add_key("bob", ed25519_key(), by=None)


def test_key_logins_refuse_other_users_unknown_keys_disabled_and_locked_accounts(
    rt: Runtime,
) -> None:
    keys = SshKeys(rt.db, rt.audit, rt.identity)
    parsed = parse_public_key(ed25519_key())
    keys.add_key("alice", parsed.openssh, by=None, name="laptop")
    login = keys.check_login("alice", parsed.blob)
    assert login is not None and isinstance(login.principal, Principal)
    assert login.principal.username == "alice" and "write" in login.principal.scopes
    assert keys.check_login("ALICE", parsed.blob) is not None
    assert keys.check_login("bob", parsed.blob) is None
    assert keys.check_login("alice", parse_public_key(ed25519_key()).blob) is None
    keys.audit_login(login, "10.1.2.3")
    assert events(rt, "auth.login")[-1] == {
        "actor": "alice",
        "outcome": "success",
        "username": "alice",
        "method": "publickey",
        "reason": "",
        "key_fingerprint": parsed.fingerprint,
        "provider": "",
    }

    rt.identity.update_user("alice", by=None, disabled=True)
    refused = keys.check_login("alice", parsed.blob)
    assert refused is not None and refused.principal is None
    assert refused.refused == "account disabled"
    with pytest.raises(Denied):
        keys.principal_for(login.principal.user_id)
    rt.identity.update_user("alice", by=None, disabled=False)
    assert keys.principal_for(login.principal.user_id).username == "alice"

    for _ in range(rt.settings.login_max_failures):
        with pytest.raises(AuthenticationFailed):
            rt.identity.authenticate("alice", "wrong", None, "test")
    refused = keys.check_login("alice", parsed.blob)
    assert refused is not None and refused.refused == "account locked"
    keys.audit_login(refused, "10.1.2.3")
    assert events(rt, "auth.login")[-1]["outcome"] == "failure"
    assert events(rt, "auth.login")[-1]["reason"] == "account locked"


def test_keys_go_with_their_user(rt: Runtime) -> None:
    keys = SshKeys(rt.db, rt.audit, rt.identity)
    text = ed25519_key()
    keys.add_key("alice", text, by=None)
    rt.identity.delete_user("alice", by=None)
    keys.add_key("bob", text, by=None)  # the fingerprint is free again
    assert len(keys.list_keys("bob")) == 1


def test_migration_matches_the_model(rt: Runtime) -> None:
    with rt.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diff if "user_ssh_keys" in repr(d)] == []


# Pure helpers of the SSH entry --------------------------------------------------------------------


def test_the_cluster_rides_in_the_user_name() -> None:
    assert split_username("alice") == ("alice", None)
    assert split_username("alice+prod") == ("alice", "prod")
    assert split_username("alice+") == ("alice", None)
    assert split_username("alice+prod+x") == ("alice", "prod+x")  # no such cluster: refused later


def test_the_host_key_is_created_private_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "ssh_host_ed25519_key"
    key = load_or_create_host_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert key.get_algorithm() == "ssh-ed25519"
    assert path.with_name(path.name + ".pub").read_text().startswith("ssh-ed25519 ")
    again = load_or_create_host_key(path)
    assert again.get_fingerprint("sha256") == key.get_fingerprint("sha256")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_host_key(path)
    path.chmod(0o600)
    path.write_text("garbage")
    with pytest.raises(ConfigError, match="cannot read the SSH host key"):
        load_or_create_host_key(path)
