"""Compare the final reward of two sets of runs (the tutorial's last step).

Usage::

    python docs/examples/compare_runs.py BASELINE_RUN_DIR... -- CANDIDATE_RUN_DIR...

Each run's final reward is the mean ``reward/mean`` of its last 10 steps in ``metrics.jsonl``;
the script prints each set's mean and spread over seeds and the difference of the means.
tests/test_sphinx.py runs it on tiny runs of ``rlsdk train`` and ``rlsdk train loss.name=reinforce``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from rlsdk.rundir import read_metrics


# -- start compare --
def final_reward(run_dir: str | Path, last: int = 10) -> float:
    """Mean ``reward/mean`` over the last ``last`` steps of a run."""
    rows = read_metrics(Path(run_dir) / "metrics.jsonl")
    if not rows:
        raise SystemExit(f"{run_dir}: no metrics.jsonl rows; is it a run folder?")
    tail = [row["reward/mean"] for row in rows[-last:]]
    return sum(tail) / len(tail)


def summary(label: str, run_dirs: list[str]) -> float:
    """Print one line per set of runs; return the mean over its runs (seeds)."""
    finals = [final_reward(d) for d in run_dirs]
    spread = statistics.stdev(finals) if len(finals) > 1 else 0.0
    mean = statistics.fmean(finals)
    print(f"{label:<10} {mean:.3f} +- {spread:.3f}  over {len(finals)} runs: {', '.join(f'{f:.3f}' for f in finals)}")
    return mean


def main(argv: list[str]) -> float:
    """``BASELINE... -- CANDIDATE...``: print both summaries and return candidate - baseline."""
    if "--" not in argv:
        raise SystemExit("usage: compare_runs.py BASELINE_RUN_DIR... -- CANDIDATE_RUN_DIR...")
    split = argv.index("--")
    baseline = summary("baseline", argv[:split])
    candidate = summary("candidate", argv[split + 1 :])
    print(f"difference of means (candidate - baseline): {candidate - baseline:+.3f}")
    return candidate - baseline
# -- end compare --


if __name__ == "__main__":
    main(sys.argv[1:])
