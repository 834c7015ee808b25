"""Issue 10 §2 on the real dockerd: a pull by tag cannot rebind a trusted name.

A tiny registry (a thread on loopback, in this file) serves a *different* image every time a
tag is asked for: the first answer is the allowlisted image, every later one an image nobody
allowlisted. Before the fix the proxy judged ``REG/app:1`` by what it meant locally, and dockerd
then fetched whatever the registry served next. Now the proxy asks the registry itself, judges
that digest, has dockerd pull exactly that digest and tags it; the tag is checked on dockerd.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from casemate.edge.decide import RiskPolicy
from casemate.testenv.docker import DockerEngine, docker_cli
from tests.edge.test_proxy import ProxyStack

pytestmark = pytest.mark.docker

REPO_PATH = "team/app"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    manifest: bytes
    config: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def image_id(self) -> str:
        return sha256(self.config)


@dataclass
class TinyRegistry:
    """Serves the v2 API for one repository; each tag request takes the next image of
    ``sequence`` (the last one repeats)."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)
    sequence: list[Image] = field(default_factory=list)
    log: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_for_tag(self) -> bytes:
        with self.lock:
            image = self.sequence.pop(0) if len(self.sequence) > 1 else self.sequence[0]
            return image.manifest

    def handler(self) -> type[BaseHTTPRequestHandler]:
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                registry.log.append((self.command, self.path))
                prefix = f"/v2/{REPO_PATH}/"
                body: bytes | None = None
                kind = "application/octet-stream"
                if self.path == "/v2/":
                    body, kind = b"{}", "application/json"
                elif self.path.startswith(prefix + "manifests/"):
                    ref = self.path[len(prefix + "manifests/") :]
                    body = registry.manifests.get(ref) if ":" in ref else registry.next_for_tag()
                    kind = MANIFEST_V2
                elif self.path.startswith(prefix + "blobs/"):
                    body = registry.blobs.get(self.path[len(prefix + "blobs/") :])
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Content-Digest", sha256(body))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        return Handler

    def add(self, config: bytes, layers: list[bytes]) -> Image:
        self.blobs[sha256(config)] = config
        layer_refs = []
        for layer in layers:
            self.blobs[sha256(layer)] = layer
            layer_refs.append(
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": sha256(layer),
                }
            )
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_V2,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "size": len(config),
                    "digest": sha256(config),
                },
                "layers": layer_refs,
            }
        ).encode()
        self.manifests[sha256(manifest)] = manifest
        return Image(manifest, config)


def image_parts(engine: DockerEngine, image: str) -> tuple[list[bytes], Any]:
    """The busybox image's layers (gzipped) and its config, from ``docker save``."""
    tar_bytes = subprocess.run(
        [docker_cli(), "save", image],
        env=engine.cli_env,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:

        def member(name: str) -> bytes:
            f = tar.extractfile(name)
            assert f is not None
            return f.read()

        [entry] = json.loads(member("manifest.json"))
        config = json.loads(member(entry["Config"]))
        layers = [gzip.compress(member(layer), mtime=0) for layer in entry["Layers"]]
    return layers, config


@pytest.fixture(scope="module")
def registry(
    docker_engine: DockerEngine, busybox_image: str
) -> Iterator[tuple[TinyRegistry, str, list[Image]]]:
    reg = TinyRegistry()
    layers, config = image_parts(docker_engine, busybox_image)
    images = []
    for n in range(3):
        variant = json.loads(json.dumps(config))
        variant.setdefault("config", {}).setdefault("Labels", {})
        variant["config"]["Labels"] = {**(variant["config"]["Labels"] or {}), "variant": str(n)}
        images.append(reg.add(json.dumps(variant).encode(), layers))
    server = ThreadingHTTPServer(("127.0.0.1", 0), reg.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield reg, f"127.0.0.1:{server.server_address[1]}", images
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def stack(
    docker_engine: DockerEngine, registry: tuple[TinyRegistry, str, list[Image]]
) -> Iterator[ProxyStack]:
    _, host, images = registry
    s = ProxyStack(
        docker_engine.socket_path, cloud="fake", policy=RiskPolicy(required_scope="write")
    )
    s.fake_cloud.allow = True
    s.start()
    s.store.allow_image(f"{host}/{REPO_PATH}", [images[0].digest], by="test")
    s.reload()
    try:
        yield s
    finally:
        s.stop()
        docker_engine.docker("image", "rm", "-f", f"{host}/{REPO_PATH}:1", check=False)
        for image in images:
            docker_engine.docker("image", "rm", "-f", image.image_id, check=False)


def local_image(engine: DockerEngine, ref: str) -> dict[str, Any] | None:
    transport = httpx.HTTPTransport(uds=str(engine.socket_path))
    with httpx.Client(transport=transport, base_url="http://docker", timeout=10) as client:
        response = client.get(f"/images/{ref}/json")
        return response.json() if response.status_code == 200 else None


def test_the_registry_serves_a_different_image_per_tag_request(
    registry: tuple[TinyRegistry, str, list[Image]],
) -> None:
    reg, host, images = registry
    reg.sequence = [images[1], images[2]]
    url = f"http://{host}/v2/{REPO_PATH}/manifests/1"
    first = httpx.head(url).headers["Docker-Content-Digest"]
    second = httpx.head(url).headers["Docker-Content-Digest"]
    assert (first, second) == (images[1].digest, images[2].digest)
    assert len({i.digest for i in images}) == len({i.image_id for i in images}) == 3


def test_pull_by_tag_fetches_what_was_judged_and_audits_it(
    stack: ProxyStack,
    docker_engine: DockerEngine,
    registry: tuple[TinyRegistry, str, list[Image]],
) -> None:
    reg, host, images = registry
    trusted, evil = images[0], images[1]
    name = f"{host}/{REPO_PATH}"
    # the proxy's question gets the trusted image; any later tag request (dockerd's, if the
    # proxy let it pull by tag) would get the evil one
    reg.sequence = [trusted, evil]
    mark = stack.audit_mark()
    pull = stack.docker("pull", f"{name}:1")
    assert pull.returncode == 0, pull.stderr
    assert f"casemate: {name}:1 is {trusted.digest}" in pull.stdout
    local = local_image(docker_engine, f"{name}:1")
    assert local is not None and local["Id"] == trusted.image_id
    assert f"{name}@{trusted.digest}" in local["RepoDigests"]
    # dockerd asked for manifests by digest only
    assert not [p for m, p in reg.log if p.endswith("/manifests/1") and m == "GET"]
    [decided] = [r for r in stack.audit(mark) if r.details["action"] == "pull"]
    assert decided.details["digest"] == trusted.digest and decided.details["allowed"]
    [pulled] = stack.rt.audit.query(kind="edge.pull", after_seq=mark, limit=10)
    assert pulled.details["verified"] and pulled.details["image_id"] == trusted.image_id
    assert pulled.details["digest"] == trusted.digest

    # now the registry serves the evil image for the tag: refused, the trusted name unchanged
    reg.sequence = [evil]
    mark = stack.audit_mark()
    again = stack.docker("pull", f"{name}:1")
    assert again.returncode != 0 and "[image_untrusted]" in again.stderr, again.stderr
    assert evil.digest in again.stderr
    local = local_image(docker_engine, f"{name}:1")
    assert local is not None and local["Id"] == trusted.image_id
    assert local_image(docker_engine, evil.image_id) is None
    [denied] = [r for r in stack.audit(mark) if r.details["action"] == "pull"]
    assert denied.details["digest"] == evil.digest and not denied.details["allowed"]


def test_a_running_container_of_the_tag_is_the_trusted_image(
    stack: ProxyStack,
    docker_engine: DockerEngine,
    registry: tuple[TinyRegistry, str, list[Image]],
) -> None:
    reg, host, images = registry
    reg.sequence = [images[0], images[2]]
    name = f"{host}/{REPO_PATH}:1"
    assert stack.docker("pull", name).returncode == 0
    run = stack.docker("run", "--rm", name, "echo", "ran")
    assert run.returncode == 0 and run.stdout == "ran\n", run.stderr
    labels = local_image(docker_engine, name)["Config"]["Labels"]  # type: ignore[index]
    assert labels["variant"] == "0"


def test_pull_of_an_unreachable_registry_or_every_tag_is_refused(stack: ProxyStack) -> None:
    gone = stack.docker("pull", "127.0.0.1:9/team/app:1")
    assert gone.returncode != 0 and "[tag_unresolved]" in gone.stderr
