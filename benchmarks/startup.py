"""Start-up time of ``rlsdk`` against ``python -c "import torch"``, paired in one run (issue 13).

Every command is a fresh process. A round runs each command once, in an order rotated from round to
round, so that the load of a shared machine and its drift hit them alike; the ratios are of medians
over the same rounds, each against ``import torch`` of this run. Measured:

- ``python -c "import torch"``: the yardstick.
- ``python -c "import torch; torch.optim.AdamW(...)"``: the floor of any ``torch.optim`` training run.
  PyTorch wraps ``Optimizer.add_param_group`` (and ``step``) in ``torch._disable_dynamo``, which
  imports ``torch._dynamo`` (sympy, triton where installed) on the first call.
- ``rlsdk plugins --json`` and ``rlsdk plugins`` (the table, which imports rich).
- the default ``rlsdk train`` (no arguments but ``--run-dir`` in a temporary folder): time from the
  spawn to the end of step 1, read without any hook from the first row of ``metrics.jsonl``, whose
  ``wall_time`` is taken when the row is written (``time.time()``, the clock of the spawn time here);
  the process is then killed. "before step 1" is that minus the row's ``step_time`` (step 1 runs
  from its first sampling call to its optimizer step): the start-up itself, config, plugins, model,
  optimizer, run folder and manifest. Step 1 takes about 0.2 s on an idle CPU-2 and several times
  that when other processes compete for the cores (PyTorch's intra-op threads then wait on each other).

``import torch`` and ``rlsdk plugins`` are timed from spawn to exit, as a user sees them, and so
include the interpreter's exit (about 0.7 s of ``import torch``'s 2 s on CPU-2); the train times stop
at the metrics row and include no exit.

Prints a markdown table (min, median, max seconds; median over ``import torch``) and the goals. Run
with nothing else on the machine where possible, and record the load average it prints::

    python benchmarks/startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TORCH = "import torch"
OPTIM = "import torch; torch.optim.AdamW([torch.zeros(1, requires_grad=True)])"
GOALS = {"rlsdk plugins --json": 1.2, "rlsdk plugins": 1.2, "rlsdk train, to the end of step 1": 1.5}


def rlsdk_command() -> list[str]:
    """The ``rlsdk`` console script beside this interpreter (``python -m rlsdk.cli`` without one)."""
    script = shutil.which("rlsdk", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "rlsdk.cli"]


def wall(command: list[str]) -> float:
    """Seconds from spawn to exit of ``command`` (which must succeed)."""
    start = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return elapsed


def train_to_first_step(folder: Path, timeout: float = 300.0) -> tuple[float, float]:
    """``(seconds to the end of step 1, seconds before step 1)`` of the default ``rlsdk train``."""
    run_dir = folder / "run"
    metrics = run_dir / "metrics.jsonl"
    start = time.time()
    proc = subprocess.Popen([*rlsdk_command(), "train", "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        while True:
            text = metrics.read_text() if metrics.exists() else ""
            if "\n" in text:
                row = json.loads(text.split("\n", 1)[0])
                done = row["wall_time"] - start
                return done, done - row["step_time"]
            if proc.poll() is not None:
                raise SystemExit(f"rlsdk train exited {proc.returncode} before step 1:\n{proc.stderr.read()[-3000:]}")
            if time.time() - start > timeout:
                raise SystemExit(f"rlsdk train wrote no metrics row in {timeout:.0f} s")
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def train_job() -> dict[str, float]:
    """Both times of one default ``rlsdk train``, in a temporary run folder."""
    with tempfile.TemporaryDirectory(prefix="rlsdk-startup-") as folder:
        done, before = train_to_first_step(Path(folder))
    return {"rlsdk train, to the end of step 1": done, "rlsdk train, before step 1": before}


def measure(rounds: int) -> dict[str, list[float]]:
    """Seconds of every command, ``rounds`` times each, the order rotated every round."""
    rlsdk = rlsdk_command()
    jobs = {
        "import torch": lambda: {"import torch": wall([sys.executable, "-c", TORCH])},
        "optim": lambda: {"import torch + torch.optim.AdamW(...)": wall([sys.executable, "-c", OPTIM])},
        "plugins --json": lambda: {"rlsdk plugins --json": wall([*rlsdk, "plugins", "--json"])},
        "plugins": lambda: {"rlsdk plugins": wall([*rlsdk, "plugins"])},
        "train": train_job,
    }
    times: dict[str, list[float]] = {}
    order = list(jobs)
    for r in range(rounds):
        for key in order[r % len(order) :] + order[: r % len(order)]:
            for name, seconds in jobs[key]().items():
                times.setdefault(name, []).append(seconds)
    return times


def report(times: dict[str, list[float]]) -> str:
    """The markdown table and the goal lines."""
    base = statistics.median(times["import torch"])
    floor = statistics.median(times["import torch + torch.optim.AdamW(...)"])
    lines = ["| command | runs | min s | median s | max s | median / `import torch` |", "|---|---|---|---|---|---|"]
    for name, values in times.items():
        med = statistics.median(values)
        lines.append(
            f"| {name} | {len(values)} | {min(values):.2f} | {med:.2f} | {max(values):.2f} | {med / base:.2f} |"
        )
    lines += ["", "Goals (issue 13, ratios of medians to `import torch`):"]
    for name, goal in GOALS.items():
        ratio = statistics.median(times[name]) / base
        lines.append(f"- {name}: {ratio:.2f}x (goal <= {goal}): {'met' if ratio <= goal else 'not met'}")
    train = statistics.median(times["rlsdk train, to the end of step 1"])
    lines.append(f"- for scale: `import torch` + `torch.optim.AdamW(...)` is {floor / base:.2f}x, and the default "
                 f"`rlsdk train` to the end of step 1 is {train / floor:.2f}x that floor")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="times each command runs (default 7)")
    args = parser.parse_args()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"torch {importlib.metadata.version('torch')}; load average (1/5/15 min) before: {load}")  # fmt: skip
    times = measure(args.rounds)
    print(report(times))
    print("load average after: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
