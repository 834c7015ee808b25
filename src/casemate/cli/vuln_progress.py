"""The progress of a long ``vuln scan`` (``--manifest``, ``--cluster``): images inventoried and
matched, on stderr, only when stderr is an interactive terminal and the report is the table
(nothing at all otherwise: a pipe or ``--format json`` gets only the report)."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class ScanProgress:
    def __init__(self, console: Console, enabled: bool) -> None:
        self._progress: Progress | None = None
        if enabled and console.is_terminal and not console.is_dumb_terminal:
            self._progress = Progress(
                TextColumn("{task.description:<18}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[image]}", markup=False),
                TimeElapsedColumn(),
                console=console,
            )
        self._tasks: dict[str, TaskID] = {}

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def __enter__(self) -> ScanProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:  # fmt: skip
        if self._progress is not None:
            self._progress.stop()

    def _task(self, step: str, total: int) -> None:
        if self._progress is not None and step not in self._tasks:
            self._tasks[step] = self._progress.add_task(step, total=total, image="")

    def images(self, total: int) -> None:
        """The images to read are known."""
        self._task("images inventoried", total)

    def matching(self, total: int) -> None:
        """The inventories read are matched next."""
        self._task("images matched", total)

    def _advance(self, step: str, image: str) -> None:
        if self._progress is not None and step in self._tasks:
            self._progress.update(self._tasks[step], advance=1, image=image)

    def inventoried(self, image: str) -> None:
        self._advance("images inventoried", image)

    def matched(self, image: str) -> None:
        self._advance("images matched", image)
