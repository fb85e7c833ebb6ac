"""Run folders that cannot be corrupted: locks, metrics rows that survive a bad line, temporary files
cleaned up, failed writes reported by file, evaluation results tied to their checkpoint."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rlsdk.cli import main
from rlsdk.errors import FolderLocked, StorageError
from rlsdk.provenance.rundir import FolderLock, RunDir, read_metrics, remove_temporary_files

FAST = ["train.steps=2", "train.prompts_per_step=2", "sampler.n=2", "run.plot=false", "--no-progress"]


@contextmanager
def _hold(folder: Path) -> Iterator[subprocess.Popen]:
    """Another process that takes the lock on ``folder`` and waits, killed (SIGKILL) on exit."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from rlsdk.provenance.rundir import FolderLock
        lock = FolderLock({str(folder)!r}, command="holder --test").acquire()
        print("held", flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout.readline().strip() == "held"
            yield process
        finally:
            process.kill()


def test_a_lock_held_by_another_process_names_it_and_a_dead_holder_is_taken_over(tmp_path):
    with _hold(tmp_path / "run") as holder:
        with pytest.raises(
            FolderLocked, match=rf"run folder '.*run' is in use by pid {holder.pid} \(holder --test, since .* UTC\)"
        ):
            FolderLock(tmp_path / "run").acquire()
    assert (tmp_path / "run" / FolderLock.NAME).exists()  # the dead holder's file stays: stale, not held
    with FolderLock(tmp_path / "run") as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / FolderLock.NAME).exists()


def test_a_lock_is_reentrant_in_its_process_and_removes_the_folders_it_created(tmp_path):
    folder = tmp_path / "a" / "b"
    with FolderLock(folder):
        with FolderLock(folder):  # rlsdk experiment locks the folder run_experiment locks again
            pass
        assert (folder / FolderLock.NAME).exists()
    assert not (tmp_path / "a").exists()  # nothing was written: the folders it made are gone
    with FolderLock(folder):
        (folder / "kept.txt").write_text("x")
    assert (folder / "kept.txt").exists() and not (folder / FolderLock.NAME).exists()


def test_a_lock_on_a_path_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="'.*file' is a file, not a folder"):
        FolderLock(tmp_path / "file").acquire()


def test_two_trainings_on_one_folder_the_second_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    with _hold(run) as holder:
        before = sorted(p.name for p in run.rglob("*"))
        assert main(["train", "--resume", str(run), "train.steps=3"]) == 2
        assert f"is in use by pid {holder.pid}" in capsys.readouterr().err
        assert main(["eval", str(run)]) == 2
        assert f"is in use by pid {holder.pid}" in capsys.readouterr().err
        assert sorted(p.name for p in run.rglob("*")) == before


def test_an_experiment_folder_is_locked(tmp_path, capsys):
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "name: x\nseeds: [0]\noverrides: [train.steps=1, train.prompts_per_step=2, sampler.n=2, run.plot=false]\n"
        "arms:\n  a: []\n"
    )
    with _hold(tmp_path / "out") as holder:
        assert main(["experiment", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"experiment folder '{tmp_path / 'out'}' is in use by pid {holder.pid}" in err
    assert not (tmp_path / "out" / "runs").exists()


def test_a_bad_metrics_line_loses_no_row(tmp_path):
    rundir = RunDir(tmp_path)
    rows = [{"step": i, "x": float(i)} for i in range(1, 6)]
    lines = [json.dumps(r) for r in rows]
    lines.insert(2, '{"step": 3, "x": 3.0, broken')  # a bad line in the middle
    rundir.metrics_path.write_text("\n".join(lines) + '\n{"step": 6, "x"')  # and a torn last line
    with pytest.warns(RuntimeWarning, match="line\\(s\\) 3 are not valid metrics rows"):
        assert read_metrics(rundir.metrics_path) == rows
    with pytest.warns(RuntimeWarning, match="moved to metrics.corrupt.jsonl"):
        rundir.truncate_metrics(4)
    assert read_metrics(rundir.metrics_path) == rows[:4]
    saved = [json.loads(line) for line in (tmp_path / "metrics.corrupt.jsonl").read_text().splitlines()]
    assert [s["line"] for s in saved] == [3, 7] and "broken" in saved[0]["text"]


def test_temporary_files_of_interrupted_writes_are_removed_when_the_folder_is_locked(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / ".config.yaml.abc.tmp", tmp_path / "checkpoints" / ".ckpt.xyz.tmp"]
    for path in stale:
        path.write_text("half")
    (tmp_path / "notes.tmp").write_text("mine")  # not rlsdk's name: kept
    with FolderLock(tmp_path):
        assert not any(p.exists() for p in stale)
    assert (tmp_path / "notes.tmp").exists() and remove_temporary_files(tmp_path) == []


def test_a_full_disk_during_a_checkpoint_is_a_clear_error_and_leaves_no_file(tmp_path, monkeypatch):
    import torch

    def full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError, match=r"cannot write '.*step_000001\.pt': No space left on device \(errno 28\)"):
        RunDir(tmp_path).save_checkpoint(1, {"step": 1})
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_eval_on_a_full_disk_reports_the_result_it_could_not_save(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    real = RunDir.write_json

    def full(self, name, data):
        if name == "eval.json":
            raise StorageError(f"cannot write {str(self.path / name)!r}: No space left on device (errno 28)")
        return real(self, name, data)

    monkeypatch.setattr(RunDir, "write_json", full)
    assert main(["eval", str(run), "eval.size=4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    result = json.loads(err.split("the result, not saved: ", 1)[1])
    assert result["eval/examples"] == 4.0 and result["step"] == 2


def test_a_failed_resume_keeps_config_and_metrics_and_a_failed_new_run_leaves_no_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    bad = tmp_path / "bad.py"
    bad.write_text(
        textwrap.dedent(
            """
            import rlsdk

            @rlsdk.hookimpl
            def register_rewards(register):
                register("broken", lambda: lambda prompts, completions, metadata: [None] * len(completions))
            """
        )
    )
    assert main(["train", "--resume", str(run), "train.steps=4", "rewards.broken=1.0", "--plugin", str(bad)]) == 2
    assert "reward 'broken'" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert (
        main(["train", *FAST, "rewards.broken=1.0", "--plugin", str(bad), "--run-dir", str(tmp_path / "new" / "run")])
        == 2
    )
    assert not (tmp_path / "new").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(Exception, match="train.lr"):
        main(["train", "train.lr=nan", "--debug"])
    os.environ["RLSDK_DEBUG"] = "1"
    try:
        with pytest.raises(Exception, match="train.lr"):
            main(["train", "train.lr=nan"])
    finally:
        del os.environ["RLSDK_DEBUG"]


def test_an_unexpected_error_is_one_line_with_exit_status_1(tmp_path, monkeypatch, capsys):
    import rlsdk.cli

    monkeypatch.setattr(rlsdk.cli, "cmd_plugins", lambda ns: {}["boom"])
    assert main(["plugins"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("rlsdk plugins: internal error: KeyError: 'boom'") and "--debug" in err and "\n" not in err


def test_sigterm_of_a_training_process_writes_a_checkpoint_and_exits_143(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "rlsdk.cli", "train", "train.steps=400", "run.checkpoint_every=0", "--no-progress",
         "--run-dir", str(run)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not read_metrics(run / "metrics.jsonl") and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    step = read_metrics(run / "metrics.jsonl")[-1]["step"]
    assert RunDir(run).latest_checkpoint().name == f"step_{step:06d}.pt" and 0 < step < 400
    assert f"to continue: rlsdk train --resume {run}" in err
