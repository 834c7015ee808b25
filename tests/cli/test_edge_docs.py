"""docs/edge.md's set-up blocks, run as written (issues 10 and 16): on fresh data directories,
through bash, with the real CLI and the real test dockerd. The long-running ``serve`` commands
get ``--help`` appended, so their options are checked but nothing is started. Then: the rules
the docs add let ``docker run`` and ``docker exec`` through the cloud, and the gateway holds the
user, token, uid mapping and allowlisted image the docs promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from casemate.core.runtime import open_runtime
from casemate.core.settings import load_settings
from casemate.edge.cloud import CloudRegistry, Effect, Subject, evaluate
from casemate.edge.store import ProxyStore
from casemate.testenv.docker import DockerEngine, docker_cli
from tests.cli.conftest import cli_env

DOCS = Path(__file__).resolve().parents[2] / "docs" / "edge.md"
BUSYBOX = "docker.io/casemate-test/busybox"


def block(name: str) -> str:
    text = DOCS.read_text()
    match = re.search(rf"<!-- docs-test: {name} -->\n```sh\n(.*?)\n```", text, re.S)
    assert match is not None, f"docs/edge.md has no '{name}' block"
    return match.group(1)


def runnable(script: str, replacements: dict[str, str]) -> str:
    """The block with its data directories replaced and ``--help`` after each serve command."""
    for old, new in replacements.items():
        script = script.replace(old, new)
    lines = script.replace("\\\n", " ").splitlines()
    out = []
    for line in lines:
        if re.match(r"\s*casemate (cloud|edge) serve\b", line):
            line = line.split("#", 1)[0].rstrip() + " --help >/dev/null"
        out.append(line)
    return "\n".join(out)


def run_block(script: str, tmp: Path, engine: DockerEngine | None = None) -> str:
    prelude = [
        "set -euo pipefail",
        f'casemate() {{ "{sys.executable}" -m casemate.cli "$@"; }}',
    ]
    if engine is not None:
        prelude.append(f'docker() {{ "{docker_cli()}" --host "{engine.host}" "$@"; }}')
    env = cli_env(tmp / "unused")
    env.pop("CASEMATE_DATA_DIR")
    done = subprocess.run(
        ["bash", "-c", "\n".join([*prelude, script])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_cloud_block_runs_and_its_rules_let_docker_run_through(tmp_path: Path) -> None:
    cloud_dir = tmp_path / "cloud"
    run_block(runnable(block("cloud"), {"/srv/cloud": str(cloud_dir)}), tmp_path)
    rt = open_runtime(load_settings(data_dir=cloud_dir), create=False)
    try:
        registry = CloudRegistry(rt.db, rt.vault, rt.audit)
        rules = registry.list_rules()
        images = {g.name: g for g in registry.list_images()}
    finally:
        rt.close()

    def effect(caller: str, action: str, image: str | None) -> Effect:
        subject = Subject(
            gateway_id="gw-1",
            caller=caller,
            action=action,
            image=image,
            digest="sha256:" + "a" * 64,
        )
        return evaluate(rules, images, subject).effect

    # what `docker pull`, `docker run --rm -t` and `docker exec -t` send to the cloud
    assert effect("ops", "pull", BUSYBOX) is Effect.ALLOW
    assert effect("ops", "create", BUSYBOX) is Effect.ALLOW
    for action in ("attach", "start", "resize", "exec_create", "exec_start", "exec_resize"):
        assert effect("ops", action, None) is Effect.ALLOW, action
    # and nothing more than the docs say
    assert effect("ops", "create", "docker.io/library/nginx") is Effect.DENY
    assert effect("eve", "create", BUSYBOX) is Effect.DENY
    assert effect("ops", "build", None) is Effect.DENY


@pytest.mark.docker
def test_the_gateway_block_runs_on_a_fresh_data_dir(
    tmp_path: Path, docker_engine: DockerEngine, busybox_image: str
) -> None:
    gateway_dir = tmp_path / "gateway"
    assert not gateway_dir.exists()
    stdout = run_block(
        runnable(block("gateway"), {"/var/lib/casemate": str(gateway_dir)}),
        tmp_path,
        docker_engine,
    )
    assert re.search(r"^cmt_\S+$", stdout, re.M), stdout  # the token, printed once
    assert gateway_dir.stat().st_mode & 0o777 == 0o700
    image_id = docker_engine.docker("image", "inspect", "-f", "{{.Id}}", busybox_image)
    rt = open_runtime(load_settings(data_dir=gateway_dir), create=False)
    try:
        store = ProxyStore(rt.db, rt.audit)
        assert [(u.uid, u.username, u.role.value) for u in store.list_users()] == [
            (1000, "ops", "super")
        ]
        [policy] = store.list_images()
        assert (policy.name, set(policy.digests)) == (BUSYBOX, {image_id.stdout.strip()})
        [token] = rt.identity.list_tokens("ops")
        assert set(token.scopes) == {"write"} and token.expires_at is not None
    finally:
        rt.close()


def test_a_command_before_init_says_what_to_do(tmp_path: Path) -> None:
    """Without `edge init` the others refuse a missing data directory (a typo must not make a
    new installation); `edge init` is idempotent."""
    env = cli_env(tmp_path / "fresh")
    cmd = [sys.executable, "-m", "casemate.cli"]
    mapped = subprocess.run(
        [*cmd, "edge", "user", "map", "1000", "ops"], capture_output=True, text=True, env=env
    )
    assert mapped.returncode != 0 and "does not exist" in mapped.stderr
    for _ in range(2):
        init = subprocess.run([*cmd, "edge", "init"], capture_output=True, text=True, env=env)
        assert init.returncode == 0 and "is ready" in init.stdout, init.stderr
