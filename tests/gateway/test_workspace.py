"""Uploading into a workspace never creates anything outside it (insider review F2): a link
inside the workspace is not followed, neither to make directories nor to write the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from casemate.errors import InvalidInput
from casemate.gateway.workspace import get_workspace_file, put_workspace_file


def test_a_link_inside_the_workspace_leads_nowhere(tmp_path: Path) -> None:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    ws.mkdir()
    outside.mkdir()
    (ws / "link").symlink_to(outside)
    (ws / "d").mkdir()
    (ws / "d" / "up").symlink_to("../..")
    for name in ("link/made/by/gateway/x", "link/x", "d/up/outside/x", "d/up/y/z"):
        with pytest.raises(InvalidInput, match="link or not a directory"):
            put_workspace_file(ws, name, b"hi")
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "ws"]
    assert put_workspace_file(ws, "a/b/c.yaml", b"kind: Pod\n") == "a/b/c.yaml"
    assert get_workspace_file(ws, "a/b/c.yaml") == b"kind: Pod\n"
    assert (ws / "a").stat().st_mode & 0o777 == 0o700
