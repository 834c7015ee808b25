"""Local test images, built without any registry and imported with ``docker import``.

* ``casemate-test/busybox:1``: Debian's static busybox with a symlink per applet and a small
  /etc/passwd (so ``--user nobody`` works); built in memory in well under a second.
* ``casemate-test/debian12:1``: ``debootstrap --variant=minbase bookworm`` from the machine's
  Debian mirror, at the point release's package versions (deliberately never upgraded: later
  tests need a real image with real outdated packages). The rootfs is built once (about 30 s)
  and cached as a tarball in the test environment cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from casemate.testenv.docker import DockerEngine, mounts_under
from casemate.testenv.services import ComponentError

log = logging.getLogger(__name__)

BUSYBOX_IMAGE = "casemate-test/busybox:1"
DEBIAN12_IMAGE = "casemate-test/debian12:1"
DEBIAN12_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
casemate:x:1000:1000:Casemate test user:/home/casemate:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
_GROUP = "root:x:0:\ndaemon:x:1:\ncasemate:x:1000:\nnogroup:x:65534:\n"


def testenv_cache_dir() -> Path:
    """``$CASEMATE_TESTENV_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/casemate/testenv``."""
    explicit = os.environ.get("CASEMATE_TESTENV_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "casemate" / "testenv"


# -- busybox ----------------------------------------------------------------------------------


def _is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (PT_INTERP)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    order = "<" if data[5] == 1 else ">"
    if data[4] == 2:  # 64-bit
        (phoff,) = struct.unpack_from(order + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x36)
    else:
        (phoff,) = struct.unpack_from(order + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(order + "HH", data, 0x2A)
    pt_interp = 3
    return all(
        struct.unpack_from(order + "I", data, phoff + i * phentsize)[0] != pt_interp
        for i in range(phnum)
    )


def static_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if candidate and Path(candidate).is_file() and _is_static_elf(Path(candidate)):
            return Path(candidate)
    raise ComponentError(
        "no statically linked busybox found; install busybox-static (scripts/setup-system)"
    )


def busybox_rootfs_tar() -> bytes:
    """A tar stream of a minimal rootfs: /bin/busybox, one symlink per applet, /etc files."""
    busybox = static_busybox()
    applets = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen: set[str] = set()

        def add(
            name: str, kind: bytes, mode: int, data: bytes = b"", target: str = "", owner: int = 0
        ) -> None:
            parent = os.path.dirname(name)
            if parent and parent not in seen:
                add(parent, tarfile.DIRTYPE, 0o755)
            if name in seen:
                return
            seen.add(name)
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, target, len(data)
            info.uid = info.gid = owner
            tar.addfile(info, io.BytesIO(data) if data else None)

        for directory in ("dev", "proc", "sys", "etc", "home", "var", "usr/bin", "usr/sbin"):
            add(directory, tarfile.DIRTYPE, 0o755)
        add("root", tarfile.DIRTYPE, 0o700)
        add("tmp", tarfile.DIRTYPE, 0o1777)
        add("home/casemate", tarfile.DIRTYPE, 0o755, owner=1000)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox.read_bytes())
        for applet in applets:
            add(applet.lstrip("/"), tarfile.SYMTYPE, 0o777, target="/bin/busybox")
        add("etc/passwd", tarfile.REGTYPE, 0o644, _PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, _GROUP.encode())
    return buffer.getvalue()


def ensure_busybox_image(engine: DockerEngine) -> str:
    """Import ``casemate-test/busybox:1`` into ``engine`` unless it is there; return it."""
    if not engine.image_exists(BUSYBOX_IMAGE):
        started = time.monotonic()
        engine.docker(
            "import",
            "--change",
            'CMD ["/bin/sh"]',
            "--change",
            f"ENV {_PATH}",
            "--message",
            "casemate test image: static busybox",
            "-",
            BUSYBOX_IMAGE,
            input=busybox_rootfs_tar(),
        )
        log.info("built %s in %.2f s", BUSYBOX_IMAGE, time.monotonic() - started)
    return BUSYBOX_IMAGE


# -- Debian 12 --------------------------------------------------------------------------------


def _apt_entries(path: Path) -> Iterator[tuple[list[str], list[str], list[str]]]:
    """(types, URIs, suites) of each entry of a one-line ``.list`` or a deb822 ``.sources``."""
    text = path.read_text(errors="replace")
    if path.suffix == ".sources":
        for paragraph in text.split("\n\n"):
            fields: dict[str, str] = {}
            key = ""
            for line in paragraph.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0].isspace() and key:
                    fields[key] += " " + line.strip()
                elif ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no":
                continue
            yield (
                fields.get("types", "").split(),
                fields.get("uris", "").split(),
                fields.get("suites", "").split(),
            )
        return
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[1].startswith("["):  # options: deb [a=b c=d] uri suite
            while words[1:] and not words[1].endswith("]"):
                del words[1]
            del words[1]
        if len(words) >= 3:
            yield [words[0]], [words[1]], [words[2]]


def debian_mirror(suite: str = DEBIAN12_SUITE) -> str:
    """The machine's Debian mirror for ``suite`` (which may be a snapshot.debian.org URL), read
    from /etc/apt; ``CASEMATE_DEBIAN_MIRROR`` wins; deb.debian.org if apt names none."""
    explicit = os.environ.get("CASEMATE_DEBIAN_MIRROR")
    if explicit:
        return explicit
    apt = Path("/etc/apt")
    files = [
        apt / "sources.list",
        *sorted((apt / "sources.list.d").glob("*.list")),
        *sorted((apt / "sources.list.d").glob("*.sources")),
    ]
    for path in files:
        if not path.is_file():
            continue
        for types, uris, suites in _apt_entries(path):
            if "deb" in types and suite in suites and uris:
                return uris[0]
    log.info("no apt source for %s found; using %s", suite, DEFAULT_MIRROR)
    return DEFAULT_MIRROR


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def debian12_rootfs(cache_dir: Path | None = None) -> Path:
    """The cached Debian 12 minbase rootfs tarball; debootstrapped on first use."""
    cache = cache_dir or testenv_cache_dir()
    tarball = cache / "debian12-rootfs.tar"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / "debian12-rootfs.lock"):
        if tarball.is_file():  # built by someone else while we waited
            return tarball
        started = time.monotonic()
        rootfs = Path(tempfile.mkdtemp(prefix="debian12-rootfs-", dir=cache))
        partial = cache / f"debian12-rootfs.tar.{os.getpid()}.tmp"
        log_path = cache / "debootstrap.log"
        mirror = debian_mirror()
        try:
            with open(log_path, "wb") as log_file:
                done = subprocess.run(
                    ["debootstrap", "--variant=minbase", DEBIAN12_SUITE, str(rootfs), mirror],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    timeout=1800,
                    check=False,
                    env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"},
                )
            if done.returncode != 0:
                raise ComponentError(
                    f"debootstrap {DEBIAN12_SUITE} from {mirror} failed (status "
                    f"{done.returncode}); last lines of {log_path}:\n{_tail(log_path)}\n"
                    f"{_tail(rootfs / 'debootstrap' / 'debootstrap.log')}"
                )
            # As in Debian's official images: no downloaded packages or package lists, and no
            # build-host identity (dockerd provides /etc/hostname and /etc/resolv.conf).
            for pattern in (
                "var/cache/apt/archives/*.deb",
                "var/cache/apt/*.bin",
                "var/lib/apt/lists/*_*",
                "etc/hostname",
                "etc/resolv.conf",
            ):
                for leftover in rootfs.glob(pattern):
                    leftover.unlink()
            rootfs.chmod(0o755)  # mkdtemp's 0700 would become the image's "/"
            packed = subprocess.run(
                [
                    "tar",
                    "--create",
                    "--file",
                    str(partial),
                    "--directory",
                    str(rootfs),
                    "--numeric-owner",
                    "--sort=name",
                    "--exclude=./dev/*",
                    "--exclude=./proc/*",
                    "--exclude=./sys/*",
                    ".",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if packed.returncode != 0:
                raise ComponentError(f"packing the Debian 12 rootfs failed: {packed.stderr}")
            os.replace(partial, tarball)
        finally:
            for point in mounts_under(rootfs):
                subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
            shutil.rmtree(rootfs, ignore_errors=True)
            partial.unlink(missing_ok=True)
        log.info(
            "debootstrapped %s from %s into %s in %.1f s",
            DEBIAN12_SUITE,
            mirror,
            tarball,
            time.monotonic() - started,
        )
    return tarball


def ensure_debian12_image(engine: DockerEngine, cache_dir: Path | None = None) -> str:
    """Import ``casemate-test/debian12:1`` into ``engine`` unless it is there; return it."""
    if not engine.image_exists(DEBIAN12_IMAGE):
        tarball = debian12_rootfs(cache_dir)
        started = time.monotonic()
        engine.docker(
            "import",
            "--change",
            'CMD ["bash"]',
            "--change",
            f"ENV {_PATH}",
            "--message",
            f"casemate test image: debootstrap minbase {DEBIAN12_SUITE}",
            str(tarball),
            DEBIAN12_IMAGE,
            timeout=900,
        )
        log.info("imported %s in %.2f s", DEBIAN12_IMAGE, time.monotonic() - started)
    return DEBIAN12_IMAGE
