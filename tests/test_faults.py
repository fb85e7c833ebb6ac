"""Fault injection: training processes killed (SIGKILL) or stopped (SIGINT, SIGTERM) at chosen and at
random points, inside steps, checkpoint writes and metrics writes. Every resume must repeat the
uninterrupted run exactly (every metric but the timings), and no temporary or lock file may remain.

The faults come from a plugin file loaded with ``--plugin`` (its ``on_step_end`` hook, and wrappers
around ``torch.save`` and ``RunDir.append_metrics``), so rlsdk itself has no fault hooks.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlsdk.provenance.rundir import FolderLock, RunDir, read_metrics

STEPS = 8
COMMON = [
    "train.prompts_per_step=4", "sampler.n=4", "run.plot=false", f"train.steps={STEPS}", "run.checkpoint_every=4",
    "train.threads=1",
]  # fmt: skip
CLI = [sys.executable, "-m", "rlsdk.cli", "train", "--no-progress"]
TIMING = {"wall_time", "tokens_per_s", "time/generate", "step_time"}

FAULT_PLUGIN = textwrap.dedent(
    """
    import os
    import signal

    import torch

    import rlsdk
    from rlsdk.provenance.rundir import RunDir

    STEP = int(os.environ["FAULT_STEP"])
    SIGNAL = getattr(signal, os.environ["FAULT_SIGNAL"])
    WHERE = os.environ["FAULT_WHERE"]  # step | checkpoint | metrics | twice
    state = {"step": 0, "second": False}


    @rlsdk.hookimpl
    def on_step_end(run, step, metrics):
        state["step"] = step
        if WHERE in ("step", "twice") and step == STEP:
            os.kill(os.getpid(), SIGNAL)
            state["second"] = WHERE == "twice"  # and again while the checkpoint on the way out is written


    _save = torch.save


    def save(obj, path, *args, **kwargs):
        if state["second"] or (WHERE == "checkpoint" and state["step"] == STEP):
            if SIGNAL == signal.SIGKILL:  # the process dies with half the file written
                _save(obj, path, *args, **kwargs)
                os.truncate(path, os.path.getsize(path) // 2)
            os.kill(os.getpid(), SIGNAL)
        return _save(obj, path, *args, **kwargs)


    torch.save = save
    _append = RunDir.append_metrics


    def append_metrics(self, row):
        if WHERE == "metrics" and row["step"] == STEP:
            with open(self.metrics_path, "a") as f:  # a torn line, then death
                f.write('{"step": %d, "reward/me' % STEP)
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), SIGNAL)
        return _append(self, row)


    RunDir.append_metrics = append_metrics
    """
)


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The metrics of the uninterrupted run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run([*CLI, *COMMON, "--run-dir", str(run)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return _strip(read_metrics(run / "metrics.jsonl"))


def _resume_and_compare(run: Path, reference: list[dict]) -> None:
    resumed = subprocess.run([*CLI, "--resume", str(run)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert _strip(read_metrics(run / "metrics.jsonl")) == reference
    left = [p.name for p in [*run.glob(".*"), *(run / "checkpoints").glob(".*")]]
    assert left == [], f"left behind: {left}"
    assert not (run / FolderLock.NAME).exists()


EXIT = {"SIGKILL": -signal.SIGKILL, "SIGINT": 128 + signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}


@pytest.mark.parametrize(
    ("signame", "where", "step", "checkpoint"),
    [
        ("SIGINT", "step", 3, "step_000003.pt"),  # the step finishes, a checkpoint of it is written
        ("SIGTERM", "step", 6, "step_000006.pt"),
        ("SIGINT", "twice", 3, None),  # a second Ctrl-C during the checkpoint on the way out: none written
        ("SIGKILL", "checkpoint", 4, None),  # half a checkpoint written, then death
        ("SIGKILL", "metrics", 6, "step_000004.pt"),  # a torn metrics line, then death
        ("SIGTERM", "checkpoint", 4, "step_000004.pt"),  # SIGTERM during a checkpoint write: it completes
    ],
)
def test_fault_then_resume_repeats_the_uninterrupted_run(tmp_path, reference, signame, where, step, checkpoint):
    plugin = tmp_path / "fault.py"
    plugin.write_text(FAULT_PLUGIN)
    run = tmp_path / "run"
    env = {**os.environ, "FAULT_STEP": str(step), "FAULT_SIGNAL": signame, "FAULT_WHERE": where}
    faulted = subprocess.run(
        [*CLI, *COMMON, "--run-dir", str(run), "--plugin", str(plugin)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert faulted.returncode == EXIT[signame], faulted.stderr
    latest = RunDir(run).latest_checkpoint()
    assert (latest.name if latest else None) == checkpoint
    if signame != "SIGKILL":
        assert "Traceback" not in faulted.stderr
        assert f"stopped by {signame}" in faulted.stderr and faulted.stderr.strip().splitlines()[-1].startswith(
            "rlsdk train: stopped"
        )
        assert f"to continue: rlsdk train --resume {run}" in faulted.stderr
    _resume_and_compare(run, reference)


@pytest.mark.slow
def test_random_faults_then_resume_repeat_the_uninterrupted_run(tmp_path, reference):
    """Signals at random times (so at random points of steps, metrics and checkpoint writes), possibly
    several per run (each process gets one, the next resume may get another), until the run finishes."""
    rng = random.Random(20261204)
    for trial in range(8):
        run = tmp_path / f"run{trial}"
        args = [*CLI, *COMMON, "--run-dir", str(run)]
        for _ in range(4):
            process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            signame = rng.choice(["SIGKILL", "SIGINT", "SIGTERM"])
            time.sleep(rng.uniform(1.5, 5.0))  # start-up takes about 2 s, the 8 steps about 1 s
            process.send_signal(getattr(signal, signame))
            _, err = process.communicate(timeout=300)
            # 0: it had finished; -signal: it arrived before Python handles signals (nothing written yet)
            assert process.returncode in (0, EXIT[signame], -getattr(signal, signame)), err
            assert "Traceback" not in err, err
            if not RunDir(run).holds_run():
                break  # killed before the run folder was written: start over below
            args = [*CLI, "--resume", str(run)]
        if RunDir(run).holds_run():
            _resume_and_compare(run, reference)
