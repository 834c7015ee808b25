"""``casemate vault``: master key rotation."""

from __future__ import annotations

import typer

from casemate.cli.common import DataDirOption, out, runtime
from casemate.errors import ConfigError

app = typer.Typer(help="Manage the secret vault.", no_args_is_help=True)


@app.command("rotate")
def rotate(data_dir: DataDirOption = None) -> None:
    """Generate a new master key and re-wrap every data key, while Casemate keeps running."""
    from casemate.core.vault import rotate_key_file  # the storage layer: not for `--help`
    from casemate.events import VaultRotated

    rt = runtime(data_dir)
    try:
        if rt.settings.master_key is not None:
            raise ConfigError(
                "the master key comes from CASEMATE_MASTER_KEY: put the new key first in that "
                "list on every instance, then run 'casemate vault rewrap'"
            )
        old, new, count = rotate_key_file(rt.db, rt.settings.resolved_master_key_file)
        rt.audit.append(VaultRotated(actor="cli", old_key=old, new_key=new, data_keys=count))
        out.print(f"master key rotated: {old} -> {new}; {count} data keys re-wrapped")
    finally:
        rt.close()


@app.command("rewrap")
def rewrap(data_dir: DataDirOption = None) -> None:
    """Re-wrap every data key under the primary master key (after changing the key list)."""
    from casemate.events import VaultRotated

    rt = runtime(data_dir)
    try:
        count = rt.vault.rewrap_all()
        primary = rt.vault.keyring.primary.id
        rt.audit.append(VaultRotated(actor="cli", new_key=primary, data_keys=count))
        out.print(f"{count} data keys re-wrapped under {primary}")
    finally:
        rt.close()
