"""Train each reference preset on a task over several seeds and print the final rewards.

A small-scale sanity check that the built-in tasks separate algorithms on the CPU. For intervals,
tests and the detectable effect, run the same comparison as an experiment (`rlsdk experiment`,
docs/guide-experiments.md).

    python benchmarks/compare_algorithms.py task.digits=2 --task addition --steps 600 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rlsdk.config import load_config
from rlsdk.plugins import get_registry
from rlsdk.provenance.rundir import read_metrics
from rlsdk.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="addition")
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "dr_grpo", "rloo", "reinforce_pp"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides, e.g. task.digits=2")
    args = parser.parse_args()
    registry = get_registry()
    print(f"task={args.task} steps={args.steps} seeds={args.seeds} overrides={args.overrides}")
    print("| algorithm | final reward (mean of last 20 steps), per seed | mean | exact match | s/run |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for algorithm in args.algorithms:
            finals, exact, seconds = [], [], []
            for seed in args.seeds:
                config = load_config(
                    registry,
                    overrides=[
                        f"algorithm={algorithm}", f"task.name={args.task}", f"seed={seed}", f"train.steps={args.steps}",
                        "run.plot=false", "run.progress=false", "run.checkpoint_every=0", *args.overrides,
                    ],
                )  # fmt: skip
                start = time.perf_counter()
                summary = train(config, registry, run_dir=Path(tmp) / f"{algorithm}-{seed}")
                seconds.append(time.perf_counter() - start)
                rows = read_metrics(Path(summary["run_dir"]) / "metrics.jsonl")[-20:]
                finals.append(sum(r["reward/mean"] for r in rows) / len(rows))
                exact.append(sum(r.get("reward/exact_match", 0.0) for r in rows) / len(rows))
            per_seed = ", ".join(f"{f:.3f}" for f in finals)
            print(
                f"| {algorithm} | {per_seed} | {statistics.mean(finals):.3f} | "
                f"{statistics.mean(exact):.3f} | {statistics.mean(seconds):.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
