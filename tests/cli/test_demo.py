"""``casemate demo up`` as a real process: a disposable cluster behind the gateway, a user who
can run kubectl through it at once, and Ctrl-C leaving no Kubernetes process behind."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from casemate.testenv import kube as testenv
from tests.cli.conftest import CASEMATE, free_port


def demo_env() -> dict[str, str]:
    keep = {"CASEMATE_TESTENV_CACHE"}  # where the test binaries are, if not the default
    return {k: v for k, v in os.environ.items() if not k.startswith("CASEMATE_") or k in keep}


def processes_under(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (the demo cluster's components)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(path).encode() in cmdline:
            found.append(int(entry.name))
    return found


def exec_line(client: httpx.Client, line: str) -> tuple[dict[str, object], str]:
    output = []
    final: dict[str, object] = {}
    with client.stream("POST", "/api/v1/clusters/demo/exec", json={"line": line}) as r:
        assert r.status_code == 200, r.read()
        for raw in r.iter_lines():
            msg = json.loads(raw)
            if msg["type"] == "output":
                output.append(msg["data"])
            elif msg["type"] in ("exit", "error"):
                final = msg
    return final, "".join(output)


def fake_testenv_cache(root: Path) -> Path:
    """A cache where every test binary 'exists' (empty executables): enough for the checks
    the demo makes before it starts anything."""
    for sub, name in (
        (f"kubernetes-{testenv.K8S_VERSION}", "kube-apiserver"),
        (f"kubernetes-{testenv.K8S_VERSION}", "kube-controller-manager"),
        (f"kubernetes-{testenv.K8S_VERSION}", "kube-scheduler"),
        (f"kubernetes-{testenv.K8S_VERSION}", "kubectl"),
        (f"kubernetes-{testenv.K8S_VERSION}", "kubelet"),
        (f"etcd-{testenv.ETCD_VERSION}", "etcd"),
        (f"kwok-{testenv.KWOK_VERSION}", "kwok"),
        (f"helm-{testenv.HELM_VERSION}", "helm"),
    ):
        path = root / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\nexit 1\n")
        path.chmod(0o755)
    return root


def run_demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CASEMATE, "demo", "up", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_demo_without_the_test_binaries_is_one_clear_line(tmp_path: Path) -> None:
    env = {**demo_env(), "CASEMATE_TESTENV_CACHE": str(tmp_path / "empty")}
    r = run_demo("--data-dir", str(tmp_path / "demo"), env=env)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "build them with" in r.stderr and "scripts/build-testenv" in r.stderr
    assert str(tmp_path / "empty" / "kubernetes-") in r.stderr  # names each missing path
    assert not (tmp_path / "demo").exists()


def test_demo_from_a_pip_install_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from casemate.cli import demo
    from casemate.errors import ConfigError

    monkeypatch.setenv("CASEMATE_TESTENV_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(demo, "BUILD_SCRIPT", tmp_path / "no-checkout" / "build-testenv")
    with pytest.raises(ConfigError) as e:
        demo._binaries()
    assert "this is a pip install" in e.value.message
    assert "kube-apiserver" in e.value.message and "helm" in e.value.message


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    env = {**demo_env(), "CASEMATE_TESTENV_CACHE": str(fake_testenv_cache(tmp_path / "cache"))}
    other = tmp_path / "casemate-data"
    other.mkdir()
    (other / "casemate.db").write_text("someone's real installation")
    r = run_demo("--data-dir", str(other), env=env)
    assert r.returncode == 1
    assert "is not a demo data directory" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in other.iterdir()) == ["casemate.db"]


@pytest.mark.k8s
def test_demo_up_serves_the_demo_user_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    port = free_port()
    proc = subprocess.Popen(
        [*CASEMATE, "demo", "up", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=demo_env(),
    )
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.put(line)
        except (OSError, ValueError):  # closed by the test's clean-up
            pass
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        output = "".join(seen)
        assert "Ctrl-C stops" in output, f"no connect banner:\n{output}"
        url = f"http://127.0.0.1:{port}"
        assert f"web and API:  {url}" in output
        assert f"casemate login --url {url} --user demo" in output
        assert "casemate exec demo -- kubectl get pods" in output
        assert "casemate connect demo" in output
        assert "kubectl delete namespace demo" in output
        assert "kubectl scale deployment web --replicas=0" in output
        assert "casemate review approve" in output
        m = re.search(r"user demo\s+password: (\S+)", output)
        assert m is not None, output
        password = m.group(1)

        login = httpx.post(
            f"{url}/api/v1/auth/login",
            json={"username": "demo", "password": password},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        token = login.json()["token"]
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        ) as client:
            final, text = exec_line(client, "kubectl get pods -n demo")
            assert final.get("type") == "exit" and final.get("code") == 0, (final, text)
            assert "web-" in text
            # the pods are real: they run on the real node and have logs
            final, text = exec_line(client, "kubectl get pods -n demo -o wide")
            assert text.count("real-node") == 2, text
            final, text = exec_line(client, "kubectl logs -n demo deployment/web")
            assert final.get("code") == 0 and "serving on :8080" in text, (final, text)
            final, text = exec_line(client, "kubectl delete namespace demo")
            assert final.get("code") == 126 and final.get("decision") == "reject", (final, text)

        kube = data / "kube"
        components = processes_under(kube)
        assert components, "the demo cluster's processes were not found"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
        rest = []
        while (line := lines.get(timeout=10)) is not None:
            rest.append(line)
        assert "Demo stopped" in "".join(rest), "".join(rest)
        assert processes_under(kube) == []
        for pid in components:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert not kube.exists()
        assert (data / "casemate.db").exists()  # the data directory stays without --clean
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
