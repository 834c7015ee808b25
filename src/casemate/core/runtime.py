"""Opens everything a Casemate process needs from its settings, in one place.

The server and the CLI both start from :func:`open_runtime`, so they see the same database,
keys, audit log and identity store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from casemate.core.audit import AuditLog
from casemate.core.db import Database
from casemate.core.identity import Identity
from casemate.core.settings import Settings
from casemate.core.vault import Vault, open_keyring
from casemate.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    vault: Vault
    audit: AuditLog
    identity: Identity

    def close(self) -> None:
        self.audit.close()
        self.db.dispose()


def open_runtime(settings: Settings, *, create: bool = True) -> Runtime:
    """Check secrets, open (and migrate) the database, load the keyring.

    ``create`` allows making the data directory and master key file on first start; CLI
    commands that only read pass ``False`` so a mistyped data directory is an error, not a new
    empty installation.
    """
    settings.check_secrets()
    data_dir = settings.data_dir
    if not data_dir.exists():
        if not create:
            raise ConfigError(f"data directory {data_dir} does not exist (use --data-dir)")
        try:
            data_dir.mkdir(parents=True, mode=0o700)
        except OSError as e:
            raise ConfigError(
                f"cannot create the data directory {data_dir}: {e.strerror}"
            ) from None
    elif not data_dir.is_dir():
        raise ConfigError(f"{data_dir} is not a directory")
    if not create and settings.database_url is None and not (data_dir / "casemate.db").exists():
        raise ConfigError(f"{data_dir} holds no Casemate database (use --data-dir)")
    keyring = open_keyring(
        settings.master_key.get_secret_value() if settings.master_key else None,
        settings.resolved_master_key_file,
        create=create,
        dev_mode=settings.dev_mode,
    )
    db = Database.open(
        settings.resolved_database_url, sqlite_synchronous=settings.sqlite_synchronous
    )
    vault = Vault(db, keyring)
    audit = AuditLog(db)
    identity = Identity(db, vault, audit, settings)
    return Runtime(settings=settings, db=db, vault=vault, audit=audit, identity=identity)
