"""Fixtures shared by the posture tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``casemate ARGS...`` in process through the real entry point: exit code, stdout and
    stderr as a CompletedProcess."""
    from casemate.cli import common, main

    monkeypatch.setattr(common.out, "_width", 300)  # restored to auto after the test

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        monkeypatch.setattr(sys, "argv", ["casemate", *args])
        capsys.readouterr()
        code = 0
        try:
            main.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return invoke
