"""Progress displays: `rlsdk.progress` (the training bar, and the display of an experiment's runs)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from rlsdk.progress import RunsProgress, TrainProgress, estimate_left, format_seconds


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=140)


def pipe() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, force_jupyter=False)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metrics(step_time: float) -> dict:
    return {"reward/mean": 0.5, "loss": 0.01, "step_time": step_time}


def test_train_bar_shows_the_mean_step_time_not_the_last():
    bar = TrainProgress(10, 0, enabled=True, console=terminal())
    try:
        for step, seconds in enumerate([3.0, 2.0, 0.1, 0.1], 1):
            bar.update(step, metrics(seconds))
        info = bar.bar.tasks[0].fields["info"]
        assert info == "reward 0.500  loss +0.0100  1.30s/step"  # (3 + 2 + 0.1 + 0.1) / 4, not 0.10
        assert bar.bar.tasks[0].completed == 4
    finally:
        bar.close()
    quiet = TrainProgress(10, 0, enabled=False)
    quiet.update(1, metrics(0.5))
    assert quiet.bar is None and quiet.info.endswith("0.50s/step")
    resumed = TrainProgress(10, 7, enabled=True, console=terminal())  # a resumed run: the mean of this process's steps
    resumed.update(8, metrics(0.25))
    assert resumed.bar.tasks[0].fields["info"].endswith("0.25s/step")
    resumed.close()


def test_estimate_and_durations():
    assert estimate_left(10.0, 20, 100) == pytest.approx(50.0)
    assert estimate_left(10.0, 0, 100) is None and estimate_left(10.0, 5, -3) == 0.0
    assert [format_seconds(s) for s in (4.24, 41, 125, 7200)] == ["4.2 s", "41 s", "2 min", "2.0 h"]


def drive(display: RunsProgress, clock: Clock, steps: int, seconds: float, first: int = 1) -> None:
    for step in range(first, first + steps):
        clock.now += seconds
        display.on_step(step, metrics(seconds))


def test_runs_estimate_counts_steps_of_the_finished_runs():
    clock, lines = Clock(), []
    # three runs to train: 10, 10 and 30 steps
    display = RunsProgress(3, 50, log=lines.append, progress=False, clock=clock)
    assert display.left() is None  # nothing trained yet
    display.start_run("a", 10)
    drive(display, clock, 5, 1.0)
    assert display.left() == pytest.approx(45.0)  # before a run has finished: the current run's 1 s/step
    drive(display, clock, 5, 1.0, first=6)
    clock.now += 10.0  # scoring: part of the run's time
    assert display.end_run() == "20 s; 2 runs left, about 80 s"  # 20 s for 10 steps, 40 steps left
    display.start_run("b", 10)
    drive(display, clock, 10, 0.5)
    assert display.end_run() == "5.0 s; 1 run left, about 38 s"  # 25 s for 20 steps, 30 left: 37.5 s
    display.start_run("c", 30, done=20)  # resumed: 10 steps to train, not 30
    drive(display, clock, 10, 1.0, first=21)
    assert display.end_run() == "10 s, resumed at step 20"
    display.close()
    assert lines == []  # progress=False: nothing within runs


def test_runs_progress_without_a_terminal_writes_a_line_now_and_then():
    clock, lines = Clock(), []
    display = RunsProgress(1, 300, log=lines.append, every=60.0, clock=clock, console=pipe())
    assert display.bar is None
    display.start_run("[1/1] grpo / default / seed 0", 300)
    drive(display, clock, 300, 1.0)  # 300 s: a line a minute
    display.close()
    assert len(lines) == 5 and lines[0].startswith("  [1/1] grpo / default / seed 0: step 60/300, reward 0.500")
    assert lines[0].endswith("1.00s/step; about 4 min left")


def test_runs_progress_on_a_terminal_draws_both_rows():
    clock, lines = Clock(), []
    display = RunsProgress(2, 20, log=lines.append, clock=clock, console=terminal())
    try:
        display.start_run("[1/2] grpo / default / seed 0", 10)
        drive(display, clock, 10, 1.0)
        display.end_run()
        display.start_run("[2/2] grpo / default / seed 1", 10)
        drive(display, clock, 4, 1.0)
        total, run = display.bar.tasks
        assert (
            total.description == "runs 1/2 done"
            and total.completed == 14
            and total.fields["info"] == "about 6.0 s left"
        )
        assert run.completed == 4 and run.fields["info"] == "reward 0.500  loss +0.0100  1.00s/step"
        shown = Console(file=io.StringIO(), width=140, record=True)
        shown.print(display.bar.get_renderable())
        text = shown.export_text()
        assert "runs 1/2 done" in text and "14/20 steps" in text and "about 6.0 s left" in text
        assert "[2/2] grpo / default / seed 1" in text and "4/10" in text and "1.00s/step" in text
    finally:
        display.close()
    assert display.bar is None and lines == []  # on a terminal nothing goes to the log within runs
