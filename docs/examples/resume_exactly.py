"""Reproducibility: one seed fixes a run, and a resumed run repeats the uninterrupted one (on the CPU).

Used by docs/guide-reproducibility.md; tests/test_sphinx.py runs it as a script. It trains a tiny
run for 4 steps, then the same run as 2 steps plus a resume to 4, and compares the metrics.
Usage: ``python docs/examples/resume_exactly.py [WORKDIR]`` (default: a temporary folder).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from rlsdk.cli import main as rlsdk_cli
from rlsdk.provenance.rundir import read_metrics
from rlsdk.provenance.seeds import SeedTree

# Wall-clock measurements differ between any two runs; everything else must match exactly.
TIMING = {"wall_time", "step_time", "tokens_per_s", "time/generate"}


def main(workdir: Path) -> None:
    """Train, interrupt-and-resume, compare."""
    # -- start seeds --
    seeds = SeedTree(3)  # one root seed, independent streams for init, data, sampling and eval
    assert seeds.seed("data") == SeedTree(3).seed("data") != seeds.seed("sampling")
    # -- end seeds --

    # -- start resume --
    tiny = ["seed=3", "train.prompts_per_step=4", "sampler.n=4", "run.plot=false"]
    full, part = workdir / "full", workdir / "part"
    assert rlsdk_cli(["train", *tiny, "train.steps=4", "--no-progress", "--run-dir", str(full)]) == 0
    assert rlsdk_cli(["train", *tiny, "train.steps=2", "--no-progress", "--run-dir", str(part)]) == 0
    assert rlsdk_cli(["train", "--resume", str(part), "train.steps=4", "--no-progress"]) == 0

    def trajectory(run_dir: Path) -> list[dict]:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in read_metrics(run_dir / "metrics.jsonl")]

    assert [row["step"] for row in trajectory(part)] == [1, 2, 3, 4]
    assert trajectory(part) == trajectory(full), "the resumed run differs from the uninterrupted one"
    # -- end resume --
    print("resumed run == uninterrupted run over", len(trajectory(full)), "steps")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="rlsdk-resume-")))
