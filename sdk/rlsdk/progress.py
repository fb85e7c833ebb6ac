"""Progress displays (rich): the bar of ``rlsdk train``, and the display of a sequence of runs for
``rlsdk experiment``, ``rlsdk ablate`` and ``rlsdk sweep``.

- :class:`TrainProgress`: one run's bar, ``train ━━━━ 120/300 0:00:48 reward 0.412  loss +0.0031  0.40s/step``;
  the seconds per step are the mean over the steps trained so far by this process (steady, unlike
  the last step's time, which swings with the completions' lengths).
- :class:`RunsProgress`: on a terminal, two rows redrawn in place (all the runs, with the time left;
  the current run, with the training bar's figures) and removed at the end; elsewhere (a log file,
  a pipe) a line at most every ``every`` seconds within a run. Each finished run gets a note for its
  log line: how long it took and the time left, estimated from the mean time per step of the runs
  finished in this invocation times the steps still to train.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["TrainProgress", "RunsProgress", "step_info", "estimate_left", "format_seconds"]


def step_info(metrics: dict[str, Any], seconds_per_step: float) -> str:
    """The figures after a training bar: reward, loss and seconds per step."""
    return (
        f"reward {metrics.get('reward/mean', float('nan')):.3f}  loss {metrics.get('loss', 0.0):+.4f}  "
        f"{seconds_per_step:.2f}s/step"
    )


def format_seconds(seconds: float) -> str:
    """A duration for people: ``4.2 s``, ``41 s``, ``12 min``, ``2.3 h``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_left(seconds: float, steps: int, steps_left: int) -> float | None:
    """The time left: ``seconds / steps * steps_left`` (the mean time per step of what has been
    trained, times the steps still to train), or None before any step."""
    if steps <= 0:
        return None
    return seconds / steps * max(steps_left, 0)


def _bar(transient: bool, console: Any = None, unit: str = "") -> Any:
    """The rich progress display both classes draw: label, bar, done/total (then ``unit``), elapsed
    time, figures."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
    ]  # fmt: skip
    if unit:
        columns.insert(3, TextColumn(unit))
    return Progress(*columns, transient=transient, console=console)


class _MeanStepTime:
    """The mean of the ``step_time`` metric over the steps seen (this process's, so a resumed run
    starts afresh)."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, metrics: dict[str, Any]) -> float:
        value = metrics.get("step_time")
        if isinstance(value, (int, float)):
            self.total, self.count = self.total + float(value), self.count + 1
        return self.mean

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class TrainProgress:
    """The training bar: reward, loss and the **mean** seconds per step (a no-op when disabled).

    Args:
        total: The run's last step.
        done: The steps already trained (a resumed run).
        enabled: Draw the bar.
        console: A ``rich.console.Console`` (default: stdout's).
    """

    def __init__(self, total: int, done: int, enabled: bool, console: Any = None):
        self.bar = None
        self.mean = _MeanStepTime()
        self.info = ""
        if not enabled:
            return
        self.bar = _bar(transient=False, console=console)
        self.bar.start()
        self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        """Show step ``step`` and its metrics."""
        # the mean over the steps this process has trained, not the last step's time: steps differ
        # several-fold (long completions early, short ones once solved; evaluation steps), and the
        # mean is what the elapsed time and the steps left are divided or multiplied by
        self.info = step_info(metrics, self.mean.add(metrics))
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=self.info)

    def close(self) -> None:
        """Stop drawing (the bar's last state stays on the terminal)."""
        if self.bar is not None:
            self.bar.stop()


class RunsProgress:
    """Progress over a sequence of training runs (an experiment's runs, a sweep's trials).

    Use: :meth:`start_run` before a run, :meth:`on_step` as its ``train(..., on_step=...)``
    callback, :meth:`end_run` after it (it returns the note for the run's log line), and
    :meth:`close` at the end (also after an error).

    Args:
        runs: The runs to train.
        steps: Their steps in all (for a resumed run, those still to train).
        log: Receives the lines written between runs when there is no terminal display.
        progress: Show progress within runs: redrawn in place on a terminal (``console`` is
            interactive), else a line through ``log`` at most every ``every`` seconds. False shows
            nothing within runs (the notes of :meth:`end_run` stay).
        every: Seconds between two lines within a run when there is no terminal display.
        clock: Seconds (monotonic); replaceable for tests.
        console: A ``rich.console.Console`` (default: stdout's).
    """

    def __init__(
        self,
        runs: int,
        steps: int,
        log: Callable[[str], None] = print,
        progress: bool = True,
        every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        console: Any = None,
    ):
        self.runs_left, self.steps_left = int(runs), int(steps)
        self.log, self.every, self.clock = log, float(every), clock
        self.finished_runs, self.finished_seconds, self.finished_steps = 0, 0.0, 0
        self.label, self.steps, self.done, self.planned, self.trained, self.start = "", 0, 0, 0, 0, clock()
        self.last_line = self.start
        self.mean = _MeanStepTime()
        self.bar = None
        self.lines = bool(progress)
        if progress:
            from rich.console import Console

            console = console or Console()
            if console.is_interactive or console.is_jupyter:
                self.bar, self.lines = _bar(transient=True, console=console, unit="steps"), False
                self.bar.start()
                self.total = self.bar.add_task(self._runs_text(), total=max(self.steps_left, 1), info="")
                self.task = None

    def set_plan(self, runs: int, steps: int) -> None:
        """Replace the runs and steps still to train, the current run's included (a sweep learns them as it goes)."""
        self.runs_left, self.steps_left = int(runs), int(steps)
        if self.bar is not None:
            done = next(t.completed for t in self.bar.tasks if t.id == self.total)
            self.bar.update(self.total, total=max(done + self.steps_left, 1), description=self._runs_text())

    def _runs_text(self) -> str:
        return f"runs {self.finished_runs}/{self.finished_runs + self.runs_left} done"

    def start_run(self, label: str, steps: int, done: int = 0) -> None:
        """A run starts: ``label`` names it, ``steps`` is its last step, ``done`` the steps it has already."""
        self.label, self.steps, self.done, self.trained = label, int(steps), int(done), 0
        self.planned = max(self.steps - self.done, 0)  # what steps_left counted for this run
        self.start = self.last_line = self.clock()
        self.mean = _MeanStepTime()
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            from rich.markup import escape

            self.task = self.bar.add_task(escape(label), total=int(steps), completed=int(done), info="")

    def left(self) -> float | None:
        """The estimated seconds left: the mean time per step of the runs finished in this
        invocation (before the first has finished, of the current run so far) times the steps left."""
        steps_left = self.steps_left - min(self.trained, self.planned)
        if self.finished_steps:
            return estimate_left(self.finished_seconds, self.finished_steps, steps_left)
        return estimate_left(self.clock() - self.start, self.trained, steps_left)

    def _left_text(self) -> str:
        left = self.left()
        return "" if left is None else f"about {format_seconds(left)} left"

    def on_step(self, step: int, metrics: dict[str, Any]) -> None:
        """The current run finished step ``step`` with ``metrics`` (the callback of :func:`rlsdk.trainer.train`)."""
        if not self.trained:
            self.done = step - 1  # a resumed run continues from its latest checkpoint
        self.trained += 1
        mean = self.mean.add(metrics)
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=step_info(metrics, mean))
            self.bar.advance(self.total)
            self.bar.update(self.total, info=self._left_text())
        elif self.lines and self.clock() - self.last_line >= self.every:
            self.last_line = self.clock()
            left = self._left_text()
            self.log(
                f"  {self.label}: step {step}/{self.steps}, {step_info(metrics, mean)}" + (f"; {left}" if left else "")
            )

    def end_run(self) -> str:
        """The current run has ended (and been scored); return its note, e.g.
        ``41 s; 12 runs left, about 8 min``."""
        seconds = self.clock() - self.start
        if self.trained:  # a run that trained nothing (it had already reached its last step) says nothing of the speed
            self.finished_seconds += seconds
            self.finished_steps += self.trained
        self.finished_runs += 1
        self.runs_left = max(self.runs_left - 1, 0)
        self.steps_left = max(self.steps_left - self.planned, 0)
        resumed = self.done if self.trained else 0
        self.trained = 0
        note = format_seconds(seconds) + (f", resumed at step {resumed}" if resumed else "")
        left = self.left() if self.runs_left else None
        if left is not None:
            note += f"; {self.runs_left} run{'s' * (self.runs_left != 1)} left, about {format_seconds(left)}"
        if self.bar is not None:
            self.bar.update(self.total, description=self._runs_text(), info=self._left_text() if self.runs_left else "")
        return note

    def close(self) -> None:
        """Remove the terminal display (the log lines stay)."""
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
