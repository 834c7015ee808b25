"""An inventory from an image's files: the OS and every installed package."""

from __future__ import annotations

from casemate.vuln.inventory.parsers import (
    InventoryError,
    parse_apk_installed,
    parse_dpkg_status,
    parse_os_release,
)
from casemate.vuln.inventory.tree import FileView
from casemate.vuln.model import TOOLS, Inventory, OsRelease, Package

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d"
APK_INSTALLED = "lib/apk/db/installed"
#: rpm databases: SQLite (Fedora 33+, RHEL 9, openSUSE), Berkeley DB and NDB (older ones)
RPM_DATABASES = (
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "var/lib/rpm/Packages.db",
    "usr/lib/sysimage/rpm/Packages.db",
)
RPM_UNSUPPORTED = (
    "rpm-based images are recognised and reported as not supported: Casemate has no rpm "
    "package reader, rpm version ordering or rpm advisory source; packages not read"
)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # dpkg does not enforce an encoding


def read_os(files: FileView, image: str) -> OsRelease:
    for path in ("etc/os-release", "usr/lib/os-release"):
        data = files.read(path, 64 * 1024)
        if data is not None:
            return parse_os_release(_text(data), f"{image}: /{path}")
    raise InventoryError(f"{image}: no /etc/os-release or /usr/lib/os-release: unknown OS")


def inventory_of(files: FileView, image: str, digest: str | None = None,
                 problems: tuple[str, ...] = (), user: str = "") -> Inventory:  # fmt: skip
    """Read the OS and package databases. What cannot be read becomes a problem; whatever
    could be read is still returned (a partial inventory)."""
    found: list[str] = list(problems)
    os_release: OsRelease | None = None
    packages: list[Package] = []
    try:
        os_release = read_os(files, image)
    except InventoryError as e:
        found.append(str(e))
    rpmdb = next((path for path in RPM_DATABASES if files.exists(path)), None)
    if rpmdb is not None and (os_release is None or os_release.manager is None):
        name = f"{os_release.id!r} {os_release.version_id!r}" if os_release else "unknown OS"
        found.append(f"{image}: {name} with the rpm database /{rpmdb}: {RPM_UNSUPPORTED}")
    elif os_release is not None and os_release.manager is None:
        found.append(
            f"{image}: unsupported OS {os_release.id!r} {os_release.version_id!r} "
            "(Debian, Ubuntu and Alpine are supported); packages not read"
        )
    else:
        sources: list[str] = []
        if os_release is None or os_release.manager == "dpkg":
            sources += [DPKG_STATUS]
            try:
                sources += [f"{DPKG_STATUS_D}/{n}" for n in files.listdir(DPKG_STATUS_D)]
            except InventoryError as e:
                found.append(f"{image}: /{DPKG_STATUS_D}: {e}")
        if os_release is None or os_release.manager == "apk":
            sources.append(APK_INSTALLED)
        for path in sources:
            where = f"{image}: /{path}"
            try:
                data = files.read(path)
                if data is None:
                    continue
                parse = parse_apk_installed if path == APK_INSTALLED else parse_dpkg_status
                packages.extend(parse(_text(data), where))
            except InventoryError as e:
                found.append(str(e) if str(e).startswith(image) else f"{where}: {e}")
    unique = {(p.manager, p.name, p.arch): p for p in packages}
    return Inventory(
        image=image,
        digest=digest,
        os=os_release,
        packages=tuple(sorted(unique.values(), key=lambda p: (p.name, p.arch))),
        problems=tuple(found),
        tools=tuple(tool for tool in TOOLS if files.exists(tool)),
        user=user,
    )
