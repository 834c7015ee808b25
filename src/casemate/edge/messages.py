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
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self, TypeAlias, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from casemate.errors import AuthenticationFailed, InvalidInput
from casemate.risks.imageref import is_digest

PROTOCOL_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_DETAILS_BYTES: Final = 32 * 1024
MAX_DEPTH: Final = 16
MAX_IMAGES: Final = 1000
MAX_LIST: Final = 256

_SIGNATURE_DOMAIN: Final = b"casemate-edge-v1 signature\x00"
_MAC_DOMAIN: Final = b"casemate-edge-v1 mac\x00"
_REQUEST_HASH_DOMAIN: Final = b"casemate-edge-v1 request\x00"
_HKDF_SALT: Final = b"casemate-edge-v1"
_MAX_INT: Final = 2**63 - 1

GATEWAY_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAC_ADDRESS_RE: Final = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KEY_RE: Final = re.compile(r"[0-9a-f]{64}")
_SIG_RE: Final = re.compile(r"[0-9a-f]{128}")
_NONCE_RE: Final = re.compile(r"[0-9a-f]{32}")
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_KIND_RE: Final = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9_-]{16,128}")
_TS_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")
_UNSAFE_TEXT: Final = re.compile("[\x00-\x1f\x7f-\x9f]")

JsonValue: TypeAlias = (
    "None | bool | int | float | str | tuple[JsonValue, ...] | Mapping[str, JsonValue]"
)


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
    _text(gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
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


def format_ts(ts: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: object, name: str = "timestamp") -> datetime:
    if not isinstance(text, str) or not _TS_RE.fullmatch(text):
        raise InvalidInput(f"{name} must be an RFC 3339 UTC timestamp ending in Z")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(f"{name} is not a valid date and time") from None


def normalise_mac(text: str) -> str:
    """``00:1A:2b:…`` / ``00-1a-…`` / ``001a2b…`` → ``00:1a:2b:3c:4d:5e``."""
    raw = re.sub(r"[:-]", "", text.strip().lower())
    if not re.fullmatch(r"[0-9a-f]{12}", raw):
        raise InvalidInput("a MAC address has six hexadecimal octets")
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def _check_utf8(value: str, name: str) -> None:
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidInput(f"{name} holds an unpaired surrogate") from None


def _text(
    value: object,
    name: str,
    *,
    max_len: int,
    pattern: re.Pattern[str] | None = None,
    min_len: int = 1,
) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if not min_len <= len(value) <= max_len:
        raise InvalidInput(f"{name} must be {min_len} to {max_len} characters long")
    if pattern is not None:
        if not pattern.fullmatch(value):
            raise InvalidInput(f"{name} has an invalid format")
    else:
        _check_utf8(value, name)
        if _UNSAFE_TEXT.search(value):
            raise InvalidInput(f"{name} holds control characters")
    return value


def _optional_text(value: object, name: str, **kwargs: Any) -> str | None:
    return None if value is None else _text(value, name, **kwargs)


def _int(value: object, name: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidInput(f"{name} must be an integer from {lo} to {hi}")
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def _aware(value: object, name: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _digest(value: object, name: str) -> str:
    if not isinstance(value, str) or not is_digest(value):
        raise InvalidInput(f"{name} must be a content digest (sha256:<64 hex>)")
    return value


def _strings(
    value: object, name: str, check: Callable[[object, str], str], max_items: int = MAX_LIST
) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > max_items:
        raise InvalidInput(f"{name} must be a list of at most {max_items} items")
    items = tuple(check(v, name) for v in value)
    if len(set(items)) != len(items):
        raise InvalidInput(f"{name} holds duplicates")
    return tuple(sorted(items))


def freeze_json(value: object, name: str = "value", depth: int = 0) -> JsonValue:
    """A deep, read-only copy of a JSON value (objects become read-only mappings, arrays
    tuples); anything that is not plain JSON raises ``InvalidInput``."""
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            _check_utf8(value, name)
        return value
    if isinstance(value, int):
        if not -_MAX_INT - 1 <= value <= _MAX_INT:
            raise InvalidInput(f"{name} holds an integer outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{name} holds a non-finite number")
        return value
    if depth >= MAX_DEPTH:
        raise InvalidInput(f"{name} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list | tuple):
        return tuple(freeze_json(v, name, depth + 1) for v in value)
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{name} has a non-string key")
            _check_utf8(k, name)
            out[k] = freeze_json(v, name, depth + 1)
        return MappingProxyType(out)
    raise InvalidInput(f"{name} holds a value that is not JSON")


def thaw_json(value: object) -> Any:
    """The plain ``dict``/``list`` form of a frozen JSON value."""
    if isinstance(value, Mapping):
        return {k: thaw_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw_json(v) for v in value]
    return value


def _json_object(value: object, name: str) -> Mapping[str, JsonValue]:
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be a JSON object")
    frozen = freeze_json(value, name)
    assert isinstance(frozen, Mapping)
    if len(canonical_json(thaw_json(frozen))) > MAX_DETAILS_BYTES:
        raise InvalidInput(f"{name} is larger than {MAX_DETAILS_BYTES} bytes")
    return frozen


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _to_wire(value: object) -> Any:
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, ImageGrant):
        return value.to_doc()
    if isinstance(value, Mapping):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_to_wire(v) for v in value]
    return value


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InvalidInput("the message repeats a key")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"the message holds the non-JSON number {name}")


def load_json(data: bytes | str) -> Any:
    """Parse one JSON document strictly (size, UTF-8, duplicates, NaN, depth)."""
    raw = data.encode() if isinstance(data, str) else data
    if not isinstance(raw, bytes | bytearray):
        raise InvalidInput("a message must be bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidInput(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the message is not UTF-8") from None
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as e:
        raise InvalidInput(f"the message is not JSON ({e.msg})") from None
    except RecursionError:
        raise InvalidInput("the message is nested too deeply") from None


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
                doc[f.name] = _to_wire(getattr(self, f.name))
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
        _text(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        _text(self.mac_address, "mac_address", max_len=17, pattern=_MAC_ADDRESS_RE)
        _text(self.hostname, "hostname", max_len=253)
        _text(self.x25519_public, "x25519_public", max_len=64, pattern=_KEY_RE)
        _text(self.ed25519_public, "ed25519_public", max_len=64, pattern=_KEY_RE)
        _text(self.nonce, "nonce", max_len=32, pattern=_NONCE_RE)
        self._set("ts", _aware(self.ts, "ts"))
        _optional_text(self.enrolment_token, "enrolment_token", max_len=128, pattern=_TOKEN_RE)
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
        _text(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        _text(self.nonce, "nonce", max_len=32, pattern=_NONCE_RE)
        if not isinstance(self.status, str) or self.status not in REGISTRATION_STATUSES:
            raise InvalidInput("status must be pending, approved or rejected")
        _text(self.reason, "reason", max_len=1000, min_len=0)
        _text(self.cloud_ed25519_public, "cloud_ed25519_public", max_len=64, pattern=_KEY_RE)
        _text(self.cloud_x25519_public, "cloud_x25519_public", max_len=64, pattern=_KEY_RE)
        self._set("ts", _aware(self.ts, "ts"))
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
        _text(self.request_id, "request_id", max_len=36, pattern=_UUID_RE)
        _text(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        _text(self.caller, "caller", max_len=64)
        _int(self.uid, "uid", 0, 2**32 - 1)
        _text(self.action, "action", max_len=64, pattern=_ACTION_RE)
        _optional_text(self.image, "image", max_len=512)
        if self.digest is not None:
            _digest(self.digest, "digest")
        _optional_text(self.container, "container", max_len=256)
        self._set("details", _json_object(self.details, "details"))
        self._set("ts", _aware(self.ts, "ts"))
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
        _text(self.request_id, "request_id", max_len=36, pattern=_UUID_RE)
        _text(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        _text(self.request_hash, "request_hash", max_len=64, pattern=_KEY_RE)
        _bool(self.allowed, "allowed")
        _bool(self.held, "held")
        _bool(self.cacheable, "cacheable")
        if self.held and self.allowed:
            raise InvalidInput("a held decision cannot allow")
        if self.cacheable and not self.allowed:
            raise InvalidInput("only an allow can be cacheable")
        _text(self.reason, "reason", max_len=1000, min_len=0)
        _text(self.rule, "rule", max_len=200, min_len=0)
        self._set("issued_at", _aware(self.issued_at, "issued_at"))
        self._set("valid_until", _aware(self.valid_until, "valid_until"))
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
        _text(self.report_id, "report_id", max_len=36, pattern=_UUID_RE)
        _text(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        _int(self.seq, "seq", 1, _MAX_INT)
        _text(self.kind, "kind", max_len=64, pattern=_KIND_RE)
        self._set("payload", _json_object(self.payload, "payload"))
        self._set("ts", _aware(self.ts, "ts"))
        self._check_mac_field()


def _action(value: object, name: str) -> str:
    return _text(value, name, max_len=64, pattern=_ACTION_RE)


def _user(value: object, name: str) -> str:
    return _text(value, name, max_len=64)


@dataclass(frozen=True, kw_only=True)
class ImageGrant:
    """One image record pushed to gateways: its content digests allowlist, the actions allowed
    on it and, if ``users`` is not empty, the only callers allowed them."""

    name: str
    digests: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _text(self.name, "image name", max_len=512)
        object.__setattr__(self, "digests", _strings(self.digests, "digests", _digest))
        object.__setattr__(self, "actions", _strings(self.actions, "actions", _action))
        object.__setattr__(self, "users", _strings(self.users, "users", _user))

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
        _text(self.gateway_id, "gateway_id", max_len=64, pattern=GATEWAY_ID_RE)
        self._set("issued_at", _aware(self.issued_at, "issued_at"))
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
    if decision.valid_until <= _aware(now, "now"):
        raise AuthenticationFailed("the decision has expired")
