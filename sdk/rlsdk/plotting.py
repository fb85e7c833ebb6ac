"""Plots of a run's training dynamics (matplotlib, headless)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from rlsdk.provenance.rundir import atomic_write_bytes

__all__ = ["plot_rewards"]


def plot_rewards(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Draw reward mean (with a +-std band) and each reward component over steps into a PNG.

    Args:
        rows: ``metrics.jsonl`` rows.
        path: Where to write the PNG (atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if rows:
        mean = [r["reward/mean"] for r in rows]
        std = [r.get("reward/std", 0.0) for r in rows]
        ax.plot(steps, mean, label="reward (weighted sum)", linewidth=2)
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2)
        components = sorted(
            {k for r in rows for k in r if k.startswith("reward/") and k not in ("reward/mean", "reward/std")}
        )
        for key in components:
            ax.plot(
                steps,
                [r.get(key, math.nan) for r in rows],
                label=key.removeprefix("reward/"),
                linewidth=1,
                linestyle="--",
            )
        evals = [(r["step"], r["eval/reward"]) for r in rows if "eval/reward" in r]
        if evals:
            ax.plot(*zip(*evals), "o", label="eval reward")
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.set_title("Reward over training")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
