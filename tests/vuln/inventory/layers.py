"""Helpers: layer tarballs, docker save archives and OCI layouts built in memory."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

OS_RELEASE = b'ID=debian\nVERSION_ID="12"\nVERSION_CODENAME=bookworm\n'


def status(*packages: tuple[str, str]) -> bytes:
    return "\n".join(
        f"Package: {n}\nStatus: install ok installed\nArchitecture: amd64\nVersion: {v}\n"
        for n, v in packages
    ).encode()


def layer(*entries: tuple[str, str, bytes | str], gzip: bool = False) -> bytes:
    """Entries are (name, kind, data-or-link): kind is file, dir, sym, hard, chr, fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gzip else "w") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            data = payload if isinstance(payload, bytes) else b""
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            if isinstance(payload, str):
                info.linkname = payload
            tar.addfile(info)
    return buffer.getvalue()


def docker_archive(path: Path, layers: list[bytes], tag: str = "test/img:1",
                   missing: tuple[str, ...] = ()) -> Path:  # fmt: skip
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": len(layers)}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{hashlib.sha256(data).hexdigest()}/layer.tar" for data in layers]
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
    with tarfile.open(path, "w") as tar:
        for name, data in [
            ("manifest.json", json.dumps(manifest).encode()),
            (config_name, config),
            *zip(names, layers, strict=True),
        ]:
            if name in missing:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def oci_layout(directory: Path, layers: list[bytes], ref: str = "1") -> Path:
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": blob(config), "size": len(config)},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                 "digest": blob(data), "size": len(data)}
                for data in layers
            ],
        }
    ).encode()  # fmt: skip
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blob(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return directory
