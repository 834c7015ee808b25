"""Insider attacks on the proxy's reading of write bodies (kubeproxy/body.py)."""

from __future__ import annotations

import time

from casemate.kubeproxy.body import with_body
from casemate.kubeproxy.classify import UNREADABLE, classify


def alias_bomb(levels: int = 8) -> bytes:
    """A few hundred bytes whose aliases make a tree of 9**levels leaves."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * 9)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


def test_a_yaml_alias_bomb_is_unreadable_at_once() -> None:
    # It cost about a minute of the proxy's event loop (every other request waited) before
    # aliases were refused; now it is unreadable, so the rules assume the worst.
    body = alias_bomb()
    assert len(body) < 600
    for target in ("/api/v1/namespaces/a/pods", "/apis/apps/v1/namespaces/a/deployments"):
        for content_type in ("application/yaml", "application/apply-patch+yaml"):
            api = classify("POST", target)
            started = time.process_time()
            read = with_body(api, body, content_type)
            assert time.process_time() - started < 1.0
            assert read.body == UNREADABLE, read.body


def test_an_alias_cannot_carry_a_privileged_container_unseen() -> None:
    body = (
        b"sc: &sc {privileged: true}\n"
        b"kind: Pod\napiVersion: v1\nmetadata: {name: x}\n"
        b"spec: {containers: [{name: c, image: i, securityContext: *sc}]}\n"
    )
    read = with_body(classify("POST", "/api/v1/namespaces/a/pods"), body, "application/yaml")
    assert read.body == UNREADABLE
    # the same pod without the alias is read, and its risk seen
    plain = body.split(b"\n", 1)[1].replace(b"*sc", b"{privileged: true}")
    read = with_body(classify("POST", "/api/v1/namespaces/a/pods"), plain, "application/yaml")
    assert read.body is not None and read.body.readable and read.body.pod_risks, read.body
