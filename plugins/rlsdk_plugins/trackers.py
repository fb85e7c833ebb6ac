"""Trackers: where the metrics of every step go besides ``metrics.jsonl``.

``console`` prints one line every ``every`` steps, for logs of runs without a progress bar (CI jobs,
batch schedulers). Enable it with ``rlsdk train trackers.console.every=10``.
"""

from __future__ import annotations

import sys
from typing import Any

import rlsdk
from rlsdk.validation import check_int

DEFAULT_KEYS = ("reward/mean", "loss", "kl", "entropy", "grad_norm", "step_time")


class ConsoleTracker:
    """Print ``step N  key=value ...`` for the chosen metric keys every ``every`` steps.

    Args:
        every: Print every this many steps (and always the first step).
        keys: Metric keys to show, in order; keys a step lacks are skipped.
    """

    def __init__(self, every: int = 10, keys: list[str] | tuple[str, ...] = DEFAULT_KEYS):
        self.every = check_int(every, "trackers.console.every", low=1)
        if isinstance(keys, str) or not all(isinstance(k, str) for k in keys):
            raise rlsdk.ConfigError(f"trackers.console.keys must be a list of metric names, got {keys!r}")
        self.keys = list(keys)

    def log_config(self, config: dict[str, Any]) -> None:
        """Print the algorithm, task and policy being trained."""
        print(
            f"rlsdk: {config['algorithm']} on {config['task']['name']} with policy {config['policy']['name']}, "
            f"{config['train']['steps']} steps",
            file=sys.stdout,
            flush=True,
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Print the chosen metrics of ``step`` if it is the first or a multiple of ``every``."""
        if step == 1 or step % self.every == 0:
            shown = "  ".join(f"{k}={metrics[k]:.4g}" for k in self.keys if k in metrics)
            print(f"step {step}  {shown}", file=sys.stdout, flush=True)

    def close(self) -> None:
        """Nothing to release."""


@rlsdk.hookimpl
def register_trackers(register) -> None:  # noqa: ANN001 - the hook's callback
    """Register the ``console`` tracker."""
    register("console", ConsoleTracker)
