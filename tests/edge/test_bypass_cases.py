"""Replay ``bypass_cases.CASES`` through the pure reader and decision.

The host the cases describe (``CONTEXT``: directories, symlinks, containers, volumes,
networks, registry answers) is simulated here; test_conformance.py builds it for real in front
of the real dockerd and replays the same bytes.
"""

from __future__ import annotations

from typing import Any

import pytest

from casemate.edge.decide import (
    Caller,
    ImageRecord,
    ImageTrust,
    NetworkInfo,
    RiskPolicy,
    TrustFacts,
    decide,
    facts_needed,
    host_paths_of,
)
from casemate.edge.dockerapi import DockerRequest, read_request
from casemate.edge.mounts import ContainerMounts, container_mounts
from casemate.edge.refusal import EdgeRefused
from tests.edge import helpers
from tests.edge.bypass_cases import CASES, CONTEXT, BypassCase

BUILTIN_NETWORKS = {"bridge": "bridge", "host": "host", "none": "null"}


def policy_for_context() -> RiskPolicy:
    return RiskPolicy(
        host_path_allowlist=frozenset(CONTEXT["host_path_allowlist"]),
        max_memory=CONTEXT["max_memory"],
        max_pids=CONTEXT["max_pids"],
    )


def _links() -> dict[str, str]:
    return {**CONTEXT["symlinks"], **CONTEXT["swaps"]}


def simulated_realpath(path: str) -> str:
    """``os.path.realpath`` on the host CONTEXT describes (symlink targets are absolute)."""
    links = _links()
    parts = path.strip("/").split("/") if path != "/" else []
    current = ""
    for i, part in enumerate(parts):
        current = f"{current}/{part}"
        if current in links:
            rest = "/".join(parts[i + 1 :])
            target = links[current]
            joined = target.rstrip("/") + ("/" + rest if rest else "")
            return simulated_realpath(joined or "/")
    return current or "/"


def simulated_exists(path: str) -> bool:
    return path in {"/", *CONTEXT["dirs"], *CONTEXT["files"], *_links()}


def simulated_inspect(spec: dict[str, Any]) -> dict[str, Any]:
    """A container inspect as dockerd gives it for a container created with ``spec``."""
    mounts: list[dict[str, Any]] = []
    for bind in spec.get("Binds", []):
        source, target = bind.split(":")[:2]
        read_write = not bind.endswith(":ro")
        if source.startswith("/"):
            mounts.append(
                {"Type": "bind", "Source": source, "Destination": target, "RW": read_write}
            )
        else:
            mounts.append({"Type": "volume", "Name": source, "Driver": "local", "RW": read_write})
    mounts += [
        {"Type": m["Type"], "Source": m["Source"], "RW": True} for m in spec.get("Mounts", [])
    ]
    return {"HostConfig": spec, "Mounts": mounts}


def simulated_mounts(name: str) -> ContainerMounts:
    spec = CONTEXT["containers"].get(name)
    if spec is None:
        return ContainerMounts(found=False)
    volumes = {n: {"Options": o} for n, o in CONTEXT["volumes"].items()}
    return container_mounts(simulated_inspect(spec), volumes)


def _trust(request: DockerRequest) -> TrustFacts:
    images = {
        ref: ImageRecord(ref, frozenset(digests), verified)
        for ref, (digests, verified) in CONTEXT["images"].items()
    }
    needed = facts_needed(request)
    containers = {c: simulated_mounts(c) for c in needed.containers}
    networks: dict[str, NetworkInfo | None] = {}
    known = {**BUILTIN_NETWORKS, **CONTEXT["networks"]}
    for name in needed.networks:
        driver = known.get(name)
        networks[name] = None if driver is None else NetworkInfo(name, driver)
    paths = needed.host_paths | host_paths_of(containers.values())
    return TrustFacts(
        now=helpers.NOW,
        allowlist=ImageTrust.from_names(CONTEXT["allowlist"]),
        images=images,
        host_paths={p: simulated_realpath(p) for p in paths},
        present_host_paths=frozenset(p for p in paths if simulated_exists(p)),
        containers=containers,
        networks=networks,
        registry_digests=dict(CONTEXT["registry"]),
    )


def _caller(case: BypassCase) -> Caller:
    return helpers.SUPER if case.caller == "super" else helpers.ORDINARY


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))


def test_the_simulated_host():
    share = CONTEXT["host_path_allowlist"][0]
    assert simulated_realpath(f"{share}/link") == "/"
    assert simulated_realpath(f"{share}/link/etc") == "/etc"
    assert simulated_realpath(f"{share}/inlink") == f"{share}/data"
    assert simulated_realpath(f"{share}/data/sub") == f"{share}/data/sub"
    assert simulated_exists(f"{share}/data") and not simulated_exists(f"{share}/new")
    swapped = simulated_mounts("cm-bp-volume-swapped")
    assert [s.path for s in swapped.sources] == [f"{share}/victim3"]
    assert simulated_mounts("nope") == ContainerMounts(found=False)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bypass_case(case: BypassCase):
    try:
        request = read_request(case.raw)
    except EdgeRefused as e:
        assert (case.outcome, case.code, case.status) == ("refused", e.code.value, e.status), e
        return
    assert case.outcome != "refused", f"parsed as {request.action}, expected a refusal"
    verdict = decide(request, _caller(case), _trust(request), policy_for_context())
    assert verdict.code.value == case.code, verdict.reason
    assert verdict.status == case.status
    assert verdict.allowed is (case.outcome in ("cloud", "allowed"))
    assert verdict.needs_cloud is (case.outcome == "cloud")
