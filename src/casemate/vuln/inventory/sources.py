"""Where images come from: a ``docker save`` tarball, an OCI layout directory, an unpacked
rootfs, or the local Docker engine (its image export, ``GET /images/{name}/get``; the image is
never run). Every layer is applied in memory (:mod:`casemate.vuln.inventory.tree`); the
engine's export is streamed into a scratch file and read from there, nothing else is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
import zstandard

from casemate.risks.imageref import InvalidImageReference, parse_image_ref
from casemate.vuln.inventory.cache import InventoryCache
from casemate.vuln.inventory.parsers import InventoryError
from casemate.vuln.inventory.scan import inventory_of
from casemate.vuln.inventory.tree import LayeredTree, RootDir, member_parts
from casemate.vuln.model import Inventory

MAX_JSON = 16 * 1024 * 1024
MAX_EXPORT = 32 * 1024**3
_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json",
     "application/vnd.docker.distribution.manifest.list.v2+json"}
)  # fmt: skip


@dataclass(frozen=True)
class _Layer:
    where: str
    open: Any  # () -> context manager yielding a binary file


def _json(data: bytes | None, where: str) -> Any:
    if data is None:
        raise InventoryError(f"{where} is missing")
    if len(data) > MAX_JSON:
        raise InventoryError(f"{where} is larger than {MAX_JSON} bytes")
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InventoryError(f"{where} is not valid JSON: {e}") from None


def _user(config: Any) -> str:
    """The image config's ``config.User`` ("" when unset or unreadable)."""
    inner = config.get("config") if isinstance(config, dict) else None
    user = inner.get("User") if isinstance(inner, dict) else None
    return user if isinstance(user, str) else ""


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _open_layer(raw: IO[bytes]) -> tarfile.TarFile:
    """A layer as a tar archive: plain, gzip, bzip2, xz, or zstd (read as a stream: member
    bytes are only decompressed as far as the archive is read, and bounded per file)."""
    head = raw.read(4)
    raw.seek(0)
    if head == ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, closefd=False)
        return tarfile.open(fileobj=reader, mode="r|")
    return tarfile.open(fileobj=raw, mode="r:*")


def _apply(name: str, digest: str | None, layers: list[_Layer], user: str = "") -> Inventory:
    tree = LayeredTree()
    problems: list[str] = []
    for layer in layers:
        try:
            with layer.open() as raw:
                try:
                    archive = _open_layer(raw)
                except tarfile.CompressionError as e:
                    raise InventoryError(f"{layer.where}: unsupported compression ({e})") from None
                except (tarfile.TarError, EOFError, OSError) as e:
                    raise InventoryError(
                        f"{layer.where} is not a readable tar archive: {e}"
                    ) from None
                with archive:
                    problems += tree.apply_layer(archive, layer.where)
        except InventoryError as e:
            problems.append(str(e))
        except zstandard.ZstdError as e:  # nothing of a layer applies unless it reads whole
            problems.append(f"{layer.where}: a broken zstd stream ({e})")
    return inventory_of(tree, name, digest, tuple(problems), user)


# -- docker save ---------------------------------------------------------------------------


def _member(archive: tarfile.TarFile, name: str, where: str) -> tarfile.TarInfo:
    if member_parts(name) is None:
        raise InventoryError(f"{where}: refused path {name!r} (outside the archive)")
    try:
        return archive.getmember(os.path.normpath(name))
    except KeyError:
        raise InventoryError(f"{where}: missing {name!r}") from None


def _read_member(archive: tarfile.TarFile, name: str, where: str) -> bytes:
    member = _member(archive, name, where)
    if member.size > MAX_JSON:
        raise InventoryError(f"{where}: {name} is larger than {MAX_JSON} bytes")
    extracted = archive.extractfile(member)
    if extracted is None:
        raise InventoryError(f"{where}: {name} is not a file")
    return extracted.read()


def scan_docker_archive(path: Path, name: str | None = None,
                        cache: InventoryCache | None = None) -> list[Inventory]:  # fmt: skip
    """Every image in a ``docker save`` tarball (``manifest.json`` with config and layers)."""
    where = str(path)
    try:
        archive = tarfile.open(path, mode="r:*")
    except FileNotFoundError:
        raise InventoryError(f"{where}: no such file") from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise InventoryError(f"{where} is not a readable tar archive: {e}") from None
    with archive:
        try:
            manifest = _json(
                _read_member(archive, "manifest.json", where), f"{where}: manifest.json"
            )
        except (tarfile.TarError, EOFError, OSError) as e:
            raise InventoryError(f"{where} is not a readable tar archive: {e}") from None
        if not isinstance(manifest, list) or not manifest:
            raise InventoryError(f"{where}: manifest.json lists no images")
        result: list[Inventory] = []
        for entry in manifest:
            if not isinstance(entry, dict) or not isinstance(entry.get("Layers"), list):
                raise InventoryError(f"{where}: manifest.json entry without Layers")
            config = _read_member(archive, str(entry.get("Config", "")), where)
            digest = "sha256:" + hashlib.sha256(config).hexdigest()
            tags = entry.get("RepoTags") or []
            image = name or (str(tags[0]) if tags else f"{path.name}@{digest[:19]}")
            cached = cache.get(digest, image) if cache else None
            if cached is not None:
                result.append(cached)
                continue
            layers = [_archive_layer(archive, str(layer), where) for layer in entry["Layers"]]
            inventory = _apply(image, digest, layers, _user(_json(config, f"{where}: config")))
            if cache:
                cache.put(inventory)
            result.append(inventory)
        return result


def _archive_layer(archive: tarfile.TarFile, name: str, where: str) -> _Layer:
    label = f"{where}: layer {name}"

    @contextlib.contextmanager
    def opener() -> Iterator[IO[bytes]]:
        member = _member(archive, name, where)
        try:
            extracted = archive.extractfile(member)
        except (tarfile.TarError, KeyError) as e:
            raise InventoryError(f"{label}: {e}") from None
        if extracted is None:
            raise InventoryError(f"{label} is not a file")
        yield extracted

    return _Layer(label, opener)


# -- OCI layout ------------------------------------------------------------------------------


def _blob_path(root: Path, digest: object, where: str) -> Path:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InventoryError(f"{where}: invalid digest {digest!r}")
    algorithm, _, hexdigest = digest.partition(":")
    return root / "blobs" / algorithm / hexdigest


def _read_blob(root: Path, digest: object, where: str) -> bytes:
    path = _blob_path(root, digest, where)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_JSON + 1)
    except OSError as e:
        raise InventoryError(f"{where}: blob {digest} cannot be read: {e.strerror}") from None
    algorithm = str(digest).partition(":")[0]
    if f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" != digest:
        raise InventoryError(f"{where}: blob {digest} does not match its digest")
    return data


def _manifests(root: Path, index: Any, where: str, depth: int = 0) -> Iterator[tuple[str, Any]]:
    if depth > 4 or not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise InventoryError(f"{where}: index without manifests")
    for descriptor in index["manifests"]:
        if not isinstance(descriptor, dict):
            raise InventoryError(f"{where}: invalid descriptor")
        platform = descriptor.get("platform") or {}
        if isinstance(platform, dict) and platform.get("architecture") in ("unknown",):
            continue  # attestation manifests
        ref = (descriptor.get("annotations") or {}).get("org.opencontainers.image.ref.name", "")
        body = _json(_read_blob(root, descriptor.get("digest"), where), f"{where}: manifest")
        if descriptor.get("mediaType") in _INDEX_TYPES or "manifests" in body:
            for inner_ref, inner in _manifests(root, body, where, depth + 1):
                yield inner_ref or ref, inner
        else:
            yield ref, body


def scan_oci_layout(path: Path, cache: InventoryCache | None = None) -> list[Inventory]:
    """Every image of an OCI image layout directory (``oci-layout``, ``index.json``)."""
    where = str(path)
    if not (path / "oci-layout").is_file():
        raise InventoryError(f"{where} is not an OCI image layout (no oci-layout file)")
    try:
        index_bytes = (path / "index.json").read_bytes()
    except OSError as e:
        raise InventoryError(f"{where}: index.json cannot be read: {e.strerror}") from None
    index = _json(index_bytes, f"{where}: index.json")
    result: list[Inventory] = []
    for ref, manifest in _manifests(path, index, where):
        if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
            raise InventoryError(f"{where}: manifest without layers")
        config = manifest.get("config") or {}
        digest = str(config.get("digest", "")) if isinstance(config, dict) else ""
        _blob_path(path, digest, where)
        image = f"{path.name}:{ref}" if ref else f"{path.name}@{digest[:19]}"
        cached = cache.get(digest, image) if cache else None
        if cached is not None:
            result.append(cached)
            continue
        layers = []
        for layer in manifest["layers"]:
            blob = _blob_path(path, (layer or {}).get("digest"), where)
            layers.append(_file_layer(blob, f"{where}: layer {blob.name[:12]}"))
        config_json = _json(_read_blob(path, digest, where), f"{where}: config")
        inventory = _apply(image, digest, layers, _user(config_json))
        if cache:
            cache.put(inventory)
        result.append(inventory)
    return result


def _file_layer(path: Path, label: str) -> _Layer:
    @contextlib.contextmanager
    def opener() -> Iterator[IO[bytes]]:
        try:
            f = path.open("rb")
        except OSError as e:
            raise InventoryError(f"{label}: missing or unreadable ({e.strerror})") from None
        with f:
            yield f

    return _Layer(label, opener)


# -- rootfs ----------------------------------------------------------------------------------


def scan_rootfs(path: Path) -> Inventory:
    """An unpacked root filesystem, read in place (never cached: it can change)."""
    return inventory_of(RootDir(path), str(path))


# -- the local Docker engine -----------------------------------------------------------------


def docker_socket(docker_host: str | None = None) -> str:
    host = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        raise InventoryError(f"DOCKER_HOST {host!r}: only unix:// sockets are supported")
    return host[len("unix://") :]


def scan_docker_image(reference: str, *, docker_host: str | None = None,
                      cache: InventoryCache | None = None,
                      scratch: Path | None = None) -> Inventory:  # fmt: skip
    """An image of the local engine, read through its export API (never run)."""
    socket_path = docker_socket(docker_host)
    transport = httpx.HTTPTransport(uds=socket_path)
    try:
        parse_image_ref(reference)  # no '..', empty parts or anything dockerd would refuse
    except InvalidImageReference as e:
        raise InventoryError(e.message) from None
    quoted = quote(reference, safe="")
    try:
        with httpx.Client(transport=transport, base_url="http://docker", timeout=60) as client:
            answer = client.get(f"/images/{quoted}/json")
            if answer.status_code == 404:
                raise InventoryError(f"image {reference!r} is not in the Docker engine")
            if answer.status_code != 200:
                raise InventoryError(f"Docker engine: {answer.status_code} {answer.text[:200]}")
            try:
                described = answer.json()
            except ValueError:
                described = None
            if not isinstance(described, dict):
                raise InventoryError(f"Docker engine: an unreadable description of {reference!r}")
            digest = str(described.get("Id", ""))
            cached = cache.get(digest, reference) if cache else None
            if cached is not None:
                return cached
            with tempfile.TemporaryDirectory(prefix="casemate-export-", dir=scratch) as tmp:
                export = Path(tmp) / "image.tar"
                with client.stream("GET", f"/images/{quoted}/get") as stream:
                    if stream.status_code != 200:
                        raise InventoryError(f"exporting {reference!r}: {stream.status_code}")
                    written = 0
                    with export.open("wb") as f:
                        for chunk in stream.iter_bytes(1024 * 1024):
                            written += len(chunk)
                            if written > MAX_EXPORT:
                                raise InventoryError(
                                    f"exporting {reference!r}: larger than {MAX_EXPORT} bytes"
                                )
                            f.write(chunk)
                inventories = scan_docker_archive(export, reference)
    except httpx.HTTPError as e:
        raise InventoryError(f"Docker engine at {socket_path}: {e}") from None
    inventory = replace(inventories[0], digest=digest or inventories[0].digest)
    if cache:
        cache.put(inventory)
    return inventory
