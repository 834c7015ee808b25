"""Generated hostile names and link graphs: nothing resolves outside the image."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from casemate.vuln.inventory.tree import RootDir, member_parts

_PART = st.sampled_from(["..", ".", "", "a", "b", "etc", "/", "c..d", ".wh.a"])
_NAME = st.lists(_PART, min_size=1, max_size=6).map("/".join)


@given(_NAME)
def test_member_names_are_refused_or_confined(name: str) -> None:
    parts = member_parts(name)
    if parts is None:
        assert name.startswith("/") or ".." in name.split("/")
    else:
        assert all(p not in ("", ".", "..") and "/" not in p for p in parts)


_TARGET = st.sampled_from(
    [
        "ABSOLUTE",
        "../outside/secret",
        "../../outside/secret",
        "../../../../../outside/secret",
        "/",
        "..",
        "a",
        "etc/../..",
        "b/x",
    ]
)
_QUERY = st.lists(
    st.sampled_from(["a", "b", "etc", "x", "..", "secret", "outside"]), min_size=1, max_size=4
).map("/".join)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "etc", "a/x", "etc/x"]), _TARGET),
                max_size=5),
       st.lists(_QUERY, min_size=1, max_size=6))  # fmt: skip
def test_rootdir_never_resolves_outside(links: list[tuple[str, str]], queries: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outside = Path(tmp) / "outside"
        outside.mkdir()
        (outside / "secret").write_text("host")
        root = Path(tmp) / "root"
        (root / "etc").mkdir(parents=True)
        (root / "a").mkdir()
        for where, target in links:
            path = root / where
            if not path.exists() and not path.is_symlink() and path.parent.is_dir():
                path.symlink_to(str(outside / "secret") if target == "ABSOLUTE" else target)
        reader = RootDir(root)
        real_root = os.path.realpath(root)
        for query in queries:
            try:
                resolved = reader._resolve(query)
            except Exception as e:  # only "too many levels of symbolic links" is expected
                assert "too many levels" in str(e)
                continue
            if resolved is not None:
                assert resolved == real_root or resolved.startswith(real_root + os.sep)
            data = None
            try:
                data = reader.read(query)
            except Exception:
                pass
            assert data != b"host"
