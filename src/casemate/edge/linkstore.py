"""What the gateway's cloud link keeps in the database: its identity (key pairs in the vault,
public keys and the pinned cloud keys in ``edge_gateway_identity``), the link key of a
registration, and the newest image records the cloud pushed (``edge_gateway_push``).
Blocking calls; the link runs them in a worker thread."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from casemate.core.db import Database
from casemate.core.vault import Vault
from casemate.edge import messages as m
from casemate.edge.linkconfig import CloudLinkConfig, raw_private, utc_now
from casemate.edge.models import EdgeGatewayIdentity, EdgeGatewayPush
from casemate.errors import ConfigError, InvalidInput

__all__ = ["LinkIdentity", "LinkStore"]

log = logging.getLogger(__name__)


@dataclass
class LinkIdentity:
    ed25519: Ed25519PrivateKey = field(repr=False)
    x25519: X25519PrivateKey = field(repr=False)
    cloud_ed25519_public: str | None = None
    cloud_x25519_public: str | None = None
    link_key: bytes | None = field(default=None, repr=False)
    status: str = "unregistered"

    @property
    def ed25519_public(self) -> str:
        return m.public_hex(self.ed25519)

    @property
    def x25519_public(self) -> str:
        return m.public_hex(self.x25519)


def _purpose(gateway_id: str, what: str) -> str:
    return f"edge.gateway.{gateway_id}.{what}"


class LinkStore:
    """Loads and stores the link's state for one gateway (``config.gateway_id``)."""

    def __init__(self, db: Database, vault: Vault, config: CloudLinkConfig) -> None:
        self.db = db
        self.vault = vault
        self.config = config

    def load_identity(self) -> LinkIdentity:
        gid = self.config.gateway_id
        with self.db.session() as s:
            row = s.get(EdgeGatewayIdentity, gid)
            if row is None:
                ed, x = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
                row = EdgeGatewayIdentity(
                    gateway_id=gid,
                    mac_address=self.config.mac_address,
                    ed25519_secret_id=self.vault.put(s, _purpose(gid, "ed25519"), raw_private(ed)),
                    x25519_secret_id=self.vault.put(s, _purpose(gid, "x25519"), raw_private(x)),
                    ed25519_public=m.public_hex(ed),
                    x25519_public=m.public_hex(x),
                    status="unregistered",
                    created_at=utc_now(),
                )
                s.add(row)
                log.info("created the key pair of gateway %s", gid)
                return LinkIdentity(ed25519=ed, x25519=x)
            if row.mac_address != self.config.mac_address:
                raise ConfigError(
                    f"gateway id {gid} belongs to MAC address {row.mac_address}, "
                    f"not {self.config.mac_address}"
                )
            ident = LinkIdentity(
                ed25519=Ed25519PrivateKey.from_private_bytes(
                    self.vault.get(s, row.ed25519_secret_id, _purpose(gid, "ed25519"))
                ),
                x25519=X25519PrivateKey.from_private_bytes(
                    self.vault.get(s, row.x25519_secret_id, _purpose(gid, "x25519"))
                ),
                cloud_ed25519_public=row.cloud_ed25519_public,
                cloud_x25519_public=row.cloud_x25519_public,
                status=row.status,
            )
            if row.link_key_secret_id is not None:
                ident.link_key = self.vault.get(s, row.link_key_secret_id, _purpose(gid, "link"))
            return ident

    def store_registration(self, reply: m.Registered, link_key: bytes) -> None:
        gid = self.config.gateway_id
        with self.db.session() as s:
            row = s.get(EdgeGatewayIdentity, gid)
            if row is None:
                raise ConfigError(f"the identity of gateway {gid} has disappeared")
            row.cloud_ed25519_public = reply.cloud_ed25519_public
            row.cloud_x25519_public = reply.cloud_x25519_public
            if row.link_key_secret_id is None:
                row.link_key_secret_id = self.vault.put(s, _purpose(gid, "link"), link_key)
            else:
                self.vault.replace(s, row.link_key_secret_id, _purpose(gid, "link"), link_key)
            row.status = reply.status
            row.registered_at = utc_now()

    def load_push(self) -> m.Push | None:
        with self.db.reader() as s:
            row = s.get(EdgeGatewayPush, self.config.gateway_id)
            if row is None:
                return None
            try:
                return m.Push.from_json(row.body)
            except InvalidInput:
                log.warning("the stored image records of %s are unreadable", row.gateway_id)
                return None

    def store_push(self, push: m.Push) -> None:
        with self.db.session() as s:
            row = s.get(EdgeGatewayPush, push.gateway_id)
            if row is None:
                row = EdgeGatewayPush(gateway_id=push.gateway_id)
                s.add(row)
            row.issued_at = push.issued_at
            row.body = push.to_json().decode()
            row.received_at = utc_now()
