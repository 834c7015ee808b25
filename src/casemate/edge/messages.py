"""Messages between edge gateways and the cloud (protocol v1): strict JSON, canonical bytes,
signatures and MACs. Pure: no I/O, no clock (callers pass ``now``).

Wire format
-----------
Every message is one JSON object holding exactly the keys of its dataclass plus ``"v": 1`` and
``"type"``; a missing or unknown key, a value of the wrong type (``true`` is not an integer), a
duplicate key, NaN/Infinity, invalid UTF-8, a lone surrogate, nesting deeper than
:data:`MAX_DEPTH` or more than :data:`MAX_MESSAGE_BYTES` raises
:class:`~casemate.errors.InvalidInput`, and nothing else. Optional values are present as
``null``. Timestamps are RFC 3339 UTC with ``Z`` (``2026-01-02T03:04:05.678901Z``); keys,
signatures and MACs are lowercase hex.

Canonical bytes (what is signed or MACed) are the message without its ``signature``/``mac``
key, as ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)`` in UTF-8. The message ``type`` is part of them, and a domain string is
prepended, so a signature over one kind of message never verifies as another.

Crypto
------
* The cloud signs :class:`Registered`, :class:`Decision` and :class:`Push` with its Ed25519 key;
  the gateway verifies them with the cloud key it pinned at registration.
* The gateway signs :class:`Register` with its own Ed25519 key (proof of possession).
* :class:`AuthorizationRequest` and :class:`Report` carry an HMAC-SHA256 under the *link key*:
  ``HKDF-SHA256(X25519(own private, peer public), salt="casemate-edge-v1",
  info="casemate-edge-v1 link|<gateway id>|<gateway x25519 hex>|<cloud x25519 hex>")``, which
  both sides derive from their own private and the other's public X25519 key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Final, Self, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from casemate.edge.msgfields import (
    _MAX_INT,
    aware_field,
    bool_field,
    canonical_json,
    digest_field,
    int_field,
    json_object,
    load_json,
    optional_text,
    parse_ts,
    string_list,
    text_field,
)
from casemate.edge.msgfields import MAX_DETAILS_BYTES as MAX_DETAILS_BYTES
from casemate.edge.msgfields import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from casemate.edge.msgfields import format_ts as format_ts
from casemate.edge.msgfields import freeze_json as freeze_json
from casemate.edge.msgfields import normalise_mac as normalise_mac
from casemate.edge.msgfields import thaw_json as thaw_json
from casemate.errors import AuthenticationFailed, InvalidInput

PROTOCOL_VERSION: Final = 1
MAX_IMAGES: Final = 1000

_SIGNATURE_DOMAIN: Final = b"casemate-edge-v1 signature\x00"
_MAC_DOMAIN: Final = b"casemate-edge-v1 mac\x00"
_REQUEST_HASH_DOMAIN: Final = b"casemate-edge-v1 request\x00"
_HKDF_SALT: Final = b"casemate-edge-v1"

GATEWAY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAC_ADDRESS_RE: Final = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEY_RE: Final = re.compile(r"[0-9a-f]{64}")
_SIG_RE: Final = re.compile(r"[0-9a-f]{128}")
_NONCE_RE: Final = re.compile(r"[0-9a-f]{32}")
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_KIND_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")


# Topics ---------------------------------------------------------------------------------------

TOPIC_PREFIX: Final = "casemate/v1"
REGISTER_TOPIC: Final = f"{TOPIC_PREFIX}/register"
AUTHZ_REQUEST: Final = "authz/req"
AUTHZ_RESPONSE: Final = "authz/resp"
REPORT: Final = "report"
REGISTERED: Final = "registered"
PUSH: Final = "push"
_LEAVES: Final = frozenset({AUTHZ_REQUEST, AUTHZ_RESPONSE, REPORT, REGISTERED, PUSH})


def gateway_topic(gateway_id: str, leaf: str) -> str:
    """``casemate/v1/gw/{gateway_id}/{leaf}``; gateway ids cannot hold ``/``, ``+`` or ``#``."""
    text_field(gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
    if leaf not in _LEAVES:
        raise InvalidInput(f"unknown topic leaf {leaf!r}")
    return f"{TOPIC_PREFIX}/gw/{gateway_id}/{leaf}"


def gateway_wildcard(leaf: str) -> str:
    """The cloud's subscription for ``leaf`` from every gateway."""
    if leaf not in _LEAVES:
        raise InvalidInput(f"unknown topic leaf {leaf!r}")
    return f"{TOPIC_PREFIX}/gw/+/{leaf}"


def parse_gateway_topic(topic: str) -> tuple[str, str] | None:
    """``(gateway_id, leaf)`` of a gateway topic, or ``None`` for anything else."""
    prefix = f"{TOPIC_PREFIX}/gw/"
    if not topic.startswith(prefix):
        return None
    gateway_id, sep, leaf = topic[len(prefix) :].partition("/")
    if not sep or leaf not in _LEAVES or not GATEWAY_ID_RE.fullmatch(gateway_id):
        return None
    return gateway_id, leaf


# Values ---------------------------------------------------------------------------------------


# Messages -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Message:
    """Base of the wire messages; field names are the JSON keys."""

    TYPE: ClassVar[str] = ""
    AUTH: ClassVar[str] = ""
    _TS_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def _set(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def body(self) -> dict[str, Any]:
        """The JSON object without the ``signature``/``mac`` key."""
        doc: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": self.TYPE}
        for f in dataclasses.fields(self):
            if f.name != self.AUTH:
                doc[f.name] = to_wire(getattr(self, f.name))
        return doc

    def canonical_bytes(self) -> bytes:
        """What the signature or MAC covers."""
        return canonical_json(self.body())

    def to_json(self) -> bytes:
        doc = self.body()
        doc[self.AUTH] = getattr(self, self.AUTH)
        data = canonical_json(doc)
        if len(data) > MAX_MESSAGE_BYTES:
            raise InvalidInput(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
        return data

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        return cls.from_doc(load_json(data))

    @classmethod
    def from_doc(cls, doc: object) -> Self:
        if not isinstance(doc, dict):
            raise InvalidInput("a message must be a JSON object")
        version = doc.get("v")
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise InvalidInput(f"unsupported protocol version (expected {PROTOCOL_VERSION})")
        if doc.get("type") != cls.TYPE:
            raise InvalidInput(f"expected a {cls.TYPE} message")
        names = {f.name for f in dataclasses.fields(cls)}
        keys = set(doc) - {"v", "type"}
        if keys - names:
            raise InvalidInput(f"unknown field(s) in {cls.TYPE}: {_names(keys - names)}")
        if names - keys:
            raise InvalidInput(f"missing field(s) in {cls.TYPE}: {_names(names - keys)}")
        kwargs = {
            k: parse_ts(v, k) if k in cls._TS_FIELDS else cls._decode(k, v)
            for k, v in doc.items()
            if k in names
        }
        return cls(**kwargs)

    @classmethod
    def _decode(cls, name: str, value: object) -> object:
        return value


def _names(names: Iterable[str]) -> str:
    shown = sorted(names)[:5]
    return ", ".join(repr(n[:40]) for n in shown)


@dataclass(frozen=True, kw_only=True)
class _Signed(_Message):
    AUTH: ClassVar[str] = "signature"

    def _check_signature_field(self) -> None:
        sig = getattr(self, "signature")  # noqa: B009 - declared by each subclass
        if sig != "" and (not isinstance(sig, str) or not _SIG_RE.fullmatch(sig)):
            raise InvalidInput("signature must be 128 lowercase hex digits")


@dataclass(frozen=True, kw_only=True)
class _Maced(_Message):
    AUTH: ClassVar[str] = "mac"

    def _check_mac_field(self) -> None:
        mac = getattr(self, "mac")  # noqa: B009 - declared by each subclass
        if mac != "" and (not isinstance(mac, str) or not _KEY_RE.fullmatch(mac)):
            raise InvalidInput("mac must be 64 lowercase hex digits")


@dataclass(frozen=True, kw_only=True)
class Register(_Signed):
    """Gateway → cloud on ``casemate/v1/register``; signed with the gateway's Ed25519 key."""

    TYPE: ClassVar[str] = "register"
    _TS_FIELDS: ClassVar[frozenset[str]] = frozenset({"ts"})

    gateway_id: str
    mac_address: str
    hostname: str
    x25519_public: str
    ed25519_public: str
    nonce: str
    ts: datetime
    enrolment_token: str | None = None
    signature: str = ""

    def __repr__(self) -> str:  # the enrolment token is a credential
        return f"Register(gateway_id={self.gateway_id!r}, mac_address={self.mac_address!r})"

    def __post_init__(self) -> None:
        text_field(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        text_field(self.mac_address, "mac_address", max_len=17, pattern=_MAC_ADDRESS_RE)
        text_field(self.hostname, "hostname", max_len=253)
        text_field(self.x25519_public, "x25519_public", max_len=64, pattern=_KEY_RE)
        text_field(self.ed25519_public, "ed25519_public", max_len=64, pattern=_KEY_RE)
        text_field(self.nonce, "nonce", max_len=32, pattern=_NONCE_RE)
        self._set("ts", aware_field(self.ts, "ts"))
        optional_text(self.enrolment_token, "enrolment_token", max_len=128, pattern=_TOKEN_RE)
        self._check_signature_field()


REGISTRATION_STATUSES: Final = frozenset({"pending", "approved", "rejected"})


@dataclass(frozen=True, kw_only=True)
class Registered(_Signed):
    """Cloud → gateway on ``casemate/v1/gw/{id}/registered``: the cloud's keys and the
    gateway's state; echoes the Register's nonce."""

    TYPE: ClassVar[str] = "registered"
    _TS_FIELDS: ClassVar[frozenset[str]] = frozenset({"ts"})

    gateway_id: str
    nonce: str
    status: str
    reason: str
    cloud_ed25519_public: str
    cloud_x25519_public: str
    ts: datetime
    signature: str = ""

    def __post_init__(self) -> None:
        text_field(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        text_field(self.nonce, "nonce", max_len=32, pattern=_NONCE_RE)
        if not isinstance(self.status, str) or self.status not in REGISTRATION_STATUSES:
            raise InvalidInput("status must be pending, approved or rejected")
        text_field(self.reason, "reason", max_len=1000, min_len=0)
        text_field(self.cloud_ed25519_public, "cloud_ed25519_public", max_len=64, pattern=_KEY_RE)
        text_field(self.cloud_x25519_public, "cloud_x25519_public", max_len=64, pattern=_KEY_RE)
        self._set("ts", aware_field(self.ts, "ts"))
        self._check_signature_field()


@dataclass(frozen=True, kw_only=True)
class AuthorizationRequest(_Maced):
    """Gateway → cloud on ``casemate/v1/gw/{id}/authz/req``: may ``caller`` do ``action``?"""

    TYPE: ClassVar[str] = "authz_request"
    _TS_FIELDS: ClassVar[frozenset[str]] = frozenset({"ts"})

    request_id: str
    gateway_id: str
    caller: str
    uid: int
    action: str
    image: str | None
    digest: str | None
    container: str | None
    details: Mapping[str, Any]  # frozen on construction (read-only mappings, tuples)
    ts: datetime
    mac: str = ""

    def __post_init__(self) -> None:
        text_field(self.request_id, "request_id", max_len=36, pattern=_UUID_RE)
        text_field(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        text_field(self.caller, "caller", max_len=64)
        int_field(self.uid, "uid", 0, 2**32 - 1)
        text_field(self.action, "action", max_len=64, pattern=_ACTION_RE)
        optional_text(self.image, "image", max_len=512)
        if self.digest is not None:
            digest_field(self.digest, "digest")
        optional_text(self.container, "container", max_len=256)
        self._set("details", json_object(self.details, "details"))
        self._set("ts", aware_field(self.ts, "ts"))
        self._check_mac_field()


@dataclass(frozen=True, kw_only=True)
class Decision(_Signed):
    """Cloud → gateway on ``casemate/v1/gw/{id}/authz/resp``, signed by the cloud.

    ``held``: a manual approval is pending; the gateway may keep waiting until ``valid_until``
    (never longer than its own manual timeout) for the final decision. ``cacheable``: an
    automatic allow the gateway may reuse (if its grant cache is on) until ``valid_until``.
    """

    TYPE: ClassVar[str] = "decision"
    _TS_FIELDS: ClassVar[frozenset[str]] = frozenset({"issued_at", "valid_until"})

    request_id: str
    gateway_id: str
    request_hash: str
    allowed: bool
    held: bool
    cacheable: bool
    reason: str
    rule: str
    issued_at: datetime
    valid_until: datetime
    signature: str = ""

    def __post_init__(self) -> None:
        text_field(self.request_id, "request_id", max_len=36, pattern=_UUID_RE)
        text_field(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        text_field(self.request_hash, "request_hash", max_len=64, pattern=_KEY_RE)
        bool_field(self.allowed, "allowed")
        bool_field(self.held, "held")
        bool_field(self.cacheable, "cacheable")
        if self.held and self.allowed:
            raise InvalidInput("a held decision cannot allow")
        if self.cacheable and not self.allowed:
            raise InvalidInput("only an allow can be cacheable")
        text_field(self.reason, "reason", max_len=1000, min_len=0)
        text_field(self.rule, "rule", max_len=200, min_len=0)
        self._set("issued_at", aware_field(self.issued_at, "issued_at"))
        self._set("valid_until", aware_field(self.valid_until, "valid_until"))
        self._check_signature_field()


@dataclass(frozen=True, kw_only=True)
class Report(_Maced):
    """Gateway → cloud on ``casemate/v1/gw/{id}/report``; ``report_id`` is the idempotency key
    and ``seq`` the gateway's outbox order."""

    TYPE: ClassVar[str] = "report"
    _TS_FIELDS: ClassVar[frozenset[str]] = frozenset({"ts"})

    report_id: str
    gateway_id: str
    seq: int
    kind: str
    payload: Mapping[str, Any]  # frozen on construction (read-only mappings, tuples)
    ts: datetime
    mac: str = ""

    def __post_init__(self) -> None:
        text_field(self.report_id, "report_id", max_len=36, pattern=_UUID_RE)
        text_field(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        int_field(self.seq, "seq", 1, _MAX_INT)
        text_field(self.kind, "kind", max_len=64, pattern=_KIND_RE)
        self._set("payload", json_object(self.payload, "payload"))
        self._set("ts", aware_field(self.ts, "ts"))
        self._check_mac_field()


def _action(value: object, name: str) -> str:
    return text_field(value, name, max_len=64, pattern=_ACTION_RE)


def _user(value: object, name: str) -> str:
    return text_field(value, name, max_len=64)


@dataclass(frozen=True, kw_only=True)
class ImageGrant:
    """One image record pushed to gateways: its content digests allowlist, the actions allowed
    on it and, if ``users`` is not empty, the only callers allowed them."""

    name: str
    digests: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        text_field(self.name, "image name", max_len=512)
        object.__setattr__(self, "digests", string_list(self.digests, "digests", digest_field))
        object.__setattr__(self, "actions", string_list(self.actions, "actions", _action))
        object.__setattr__(self, "users", string_list(self.users, "users", _user))

    def to_doc(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digests": list(self.digests),
            "actions": list(self.actions),
            "users": list(self.users),
        }

    @classmethod
    def from_doc(cls, doc: object) -> ImageGrant:
        if not isinstance(doc, dict) or set(doc) != {"name", "digests", "actions", "users"}:
            raise InvalidInput("an image record has exactly name, digests, actions and users")
        return cls(**doc)

    def allows(self, caller: str, action: str, digest: str | None) -> bool:
        return (
            action in self.actions
            and (not self.users or caller in self.users)
            and (not self.digests or digest in self.digests)
        )


@dataclass(frozen=True, kw_only=True)
class Push(_Signed):
    """Cloud → gateway, retained on ``casemate/v1/gw/{id}/push``: the image records."""

    TYPE: ClassVar[str] = "push"
    _TS_FIELDS: ClassVar[frozenset[str]] = frozenset({"issued_at"})

    gateway_id: str
    issued_at: datetime
    images: tuple[ImageGrant, ...]
    signature: str = ""

    def __post_init__(self) -> None:
        text_field(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        self._set("issued_at", aware_field(self.issued_at, "issued_at"))
        if not isinstance(self.images, list | tuple) or len(self.images) > MAX_IMAGES:
            raise InvalidInput(f"images must be a list of at most {MAX_IMAGES} records")
        images = tuple(self.images)
        if not all(isinstance(i, ImageGrant) for i in images):
            raise InvalidInput("images must hold image records")
        if len({i.name for i in images}) != len(images):
            raise InvalidInput("images repeats a name")
        self._set("images", tuple(sorted(images, key=lambda i: i.name)))
        self._check_signature_field()

    @classmethod
    def _decode(cls, name: str, value: object) -> object:
        if name == "images":
            if not isinstance(value, list) or len(value) > MAX_IMAGES:
                raise InvalidInput(f"images must be a list of at most {MAX_IMAGES} records")
            return tuple(ImageGrant.from_doc(v) for v in value)
        return value

    def allowlist(self) -> dict[str, frozenset[str]]:
        """Image name → allowlisted digests (for the local image trust check)."""
        return {i.name: frozenset(i.digests) for i in self.images}


# Crypto ---------------------------------------------------------------------------------------

S = TypeVar("S", bound=_Signed)
M = TypeVar("M", bound=_Maced)


def public_hex(key: Ed25519PrivateKey | X25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def _ed25519_public(hex_key: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except ValueError:
        raise AuthenticationFailed("the signer's public key is not an Ed25519 key") from None


def _x25519_public(hex_key: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
    except ValueError:
        raise AuthenticationFailed("the peer's public key is not an X25519 key") from None


def sign(message: S, key: Ed25519PrivateKey) -> S:
    """``message`` with its ``signature`` set."""
    signature = key.sign(_SIGNATURE_DOMAIN + message.canonical_bytes()).hex()
    return dataclasses.replace(message, signature=signature)  # type: ignore[call-arg]


def verify_signature(message: _Signed, public_key_hex: str) -> None:
    """Raise ``AuthenticationFailed`` unless ``message`` is signed by ``public_key_hex``."""
    signature = getattr(message, "signature")  # noqa: B009
    if not signature:
        raise AuthenticationFailed(f"the {message.TYPE} message is not signed")
    try:
        _ed25519_public(public_key_hex).verify(
            bytes.fromhex(signature), _SIGNATURE_DOMAIN + message.canonical_bytes()
        )
    except InvalidSignature:
        raise AuthenticationFailed(f"the {message.TYPE} message has a bad signature") from None


def _mac_of(message: _Maced, key: bytes) -> str:
    return hmac.new(key, _MAC_DOMAIN + message.canonical_bytes(), hashlib.sha256).hexdigest()


def with_mac(message: M, key: bytes) -> M:
    """``message`` with its ``mac`` set (HMAC-SHA256 under the link key)."""
    return dataclasses.replace(message, mac=_mac_of(message, key))  # type: ignore[call-arg]


def verify_mac(message: _Maced, key: bytes) -> None:
    mac = getattr(message, "mac")  # noqa: B009
    if not mac or not hmac.compare_digest(mac, _mac_of(message, key)):
        raise AuthenticationFailed(f"the {message.TYPE} message has a bad MAC")


def derive_link_key(
    own_private: X25519PrivateKey,
    peer_public_hex: str,
    *,
    gateway_id: str,
    gateway_x25519_public: str,
    cloud_x25519_public: str,
) -> bytes:
    """The 32-byte HMAC key both sides derive (see the module docstring)."""
    try:
        shared = own_private.exchange(_x25519_public(peer_public_hex))
    except ValueError:
        raise AuthenticationFailed("the peer's X25519 key gives no shared secret") from None
    info = f"casemate-edge-v1 link|{gateway_id}|{gateway_x25519_public}|{cloud_x25519_public}"
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=info.encode()).derive(
        shared
    )


def key_fingerprint(ed25519_public: str, x25519_public: str) -> str:
    """``sha256:<hex>`` of a party's two public keys (what operators pin)."""
    digest = hashlib.sha256(f"casemate-edge-v1 keys|{ed25519_public}|{x25519_public}".encode())
    return "sha256:" + digest.hexdigest()


def request_hash(request: AuthorizationRequest) -> str:
    """What a decision binds itself to: SHA-256 of the request's canonical bytes."""
    return hashlib.sha256(_REQUEST_HASH_DOMAIN + request.canonical_bytes()).hexdigest()


def check_decision(
    decision: Decision, request: AuthorizationRequest, cloud_public: str, now: datetime
) -> None:
    """Raise ``AuthenticationFailed`` (with the reason) unless ``decision`` answers ``request``:
    same request id, gateway and request hash, signed by ``cloud_public``, and not expired."""
    if decision.request_id != request.request_id:
        raise AuthenticationFailed("the decision answers another request")
    if decision.gateway_id != request.gateway_id:
        raise AuthenticationFailed("the decision is for another gateway")
    if not hmac.compare_digest(decision.request_hash, request_hash(request)):
        raise AuthenticationFailed("the decision is for a different request body")
    verify_signature(decision, cloud_public)
    if decision.valid_until <= aware_field(now, "now"):
        raise AuthenticationFailed("the decision has expired")


def to_wire(value: object) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, ImageGrant):
        return value.to_doc()
    if isinstance(value, Mapping):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_wire(v) for v in value]
    return value
