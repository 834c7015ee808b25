"""The long-running commands' stop handling: a stuck shutdown step is bounded, and a second
signal exits at once with every stack on stderr."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from casemate.cli.common import bounded

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from casemate.cli.common import stop_signals

    async def stuck_cleanup():
        await asyncio.Event().wait()

    async def main():
        async with stop_signals() as stop:
            print("ready", flush=True)
            await stop.wait()
            print("stopping", flush=True)
            await stuck_cleanup()

    asyncio.run(main())
    """
)


async def test_bounded_gives_up_on_a_stuck_step_and_logs_the_stacks(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="casemate.cli"):
        await bounded(asyncio.Event().wait(), what="stopping the widget", seconds=0.3)
    assert time.monotonic() - started < 5
    assert "stopping the widget did not finish within 0 s" in caplog.text
    assert "test_bounded_gives_up_on_a_stuck_step" in capfd.readouterr().err


async def test_bounded_returns_a_finished_step_quietly(caplog: pytest.LogCaptureFixture) -> None:
    done: list[int] = []

    async def step() -> None:
        done.append(1)

    with caplog.at_level(logging.ERROR, logger="casemate.cli"):
        await bounded(step(), what="x", seconds=5)
    assert done == [1] and caplog.text == ""


def test_second_signal_exits_at_once_with_the_stacks() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline().strip() == "stopping"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)  # the first signal alone leaves it in the stuck cleanup
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1
    assert "second stop signal" in err
    assert "stuck_cleanup" in err  # the task's stack says where it was waiting
