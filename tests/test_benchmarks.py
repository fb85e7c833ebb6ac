"""The benchmarks run without a GPU: ``benchmarks/kernels.py``'s CPU table, one round of
``benchmarks/startup.py``, and (slow) every GPU row of ``kernels.py`` and every candidate of
``benchmarks/tune_kernels.py``, Triton interpreted.

The kernel ones are what a rare, 15-minute GPU session spends its time on, so a row that fails to build, a
candidate that is not a valid configuration or a goal check that crashes must show up here first, in CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU modes of the benchmark")


def _run(script: str, *args: str, timeout: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the scripts set it themselves
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _rows(out: str) -> dict[str, list[str]]:
    """``{method: [cells after the name]}`` of every markdown table row that is not a header."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[1] not in ("ms", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_cpu_table() -> None:
    out = _run("kernels.py", "--quick", timeout=120)
    assert "no GPU" in out
    rows = _rows(out)
    for name in ("rlsdk `torch` backend", "rlsdk `chunked` backend", "rlsdk `chunked` backend + `clipped_pg`"):
        ms, peak, error = rows[name]
        assert float(ms) > 0 and peak == "n/a (CPU)" and float(error) < 1e-4, (name, rows[name])
    if hasattr(torch.nn, "LinearCrossEntropyOptions"):  # PyTorch's own chunked op, a peer from 2.13 on
        assert float(rows["PyTorch `linear_cross_entropy` (chunked), reduction none"][2]) < 1e-4


def test_startup_round_runs() -> None:
    """``benchmarks/startup.py`` times every command once and prints each row and goal (the times,
    on a test machine, mean nothing)."""
    out = _run("startup.py", "--rounds", "1", timeout=300)
    rows = _rows(out)
    for name in ("import torch", "import torch + torch.optim.AdamW(...)", "rlsdk plugins --json", "rlsdk plugins",
                 "rlsdk train, to the end of step 1", "rlsdk train, before step 1"):  # fmt: skip
        runs, low, median, high, ratio = rows[name]
        assert runs == "1" and 0 < float(low) <= float(median) <= float(high) and float(ratio) > 0, (name, rows[name])
    assert rows["import torch"][-1] == "1.00"
    assert float(rows["rlsdk train, before step 1"][2]) < float(rows["rlsdk train, to the end of step 1"][2])
    for name in ("rlsdk plugins --json", "rlsdk plugins", "rlsdk train, to the end of step 1"):
        assert re.search(rf"- {re.escape(name)}: [0-9.]+x \(goal <= [0-9.]+\): (met|not met)", out), name


@pytest.mark.slow
def test_every_gpu_row_runs_interpreted() -> None:
    out = _run("kernels.py", "--quick", "--all-methods", timeout=600)
    rows = _rows(out)
    ours = [name for name in rows if "(ours" in name]
    assert len(ours) == 6, ours  # two logprob paths, the fused loss on the backend, three 6THV ops
    for name in ours + ["eager PyTorch", "`torch.compile`"]:
        ms, _, error = rows[name]
        assert float(ms) > 0 and float(error) < 1e-4, (name, rows[name])
    for name in ("Liger", "Cut-Cross-Entropy"):  # not in the test environment: skipped, not failed
        assert all("skipped: not installed" in cells[0] for row, cells in rows.items() if row.startswith(name))
    assert not [row for row, cells in rows.items() if cells[0].startswith("failed")], out
    goals = out[out.index("Goals (issue 4)") :]
    for name in ours:
        if "8THV)" not in name:  # the fused loss on the backend has no goal of its own
            assert re.search(rf"- {re.escape(name)}: .*goal", goals), name


@pytest.mark.slow
def test_every_tuning_candidate_runs_interpreted() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import tune_kernels
    finally:
        sys.path.pop(0)
    out = _run("tune_kernels.py", "--shape", "tiny", timeout=600)
    assert "failed" not in out and "budget reached" not in out, out
    for title, count in (("triton logprob backend sweep", len(tune_kernels.CANDIDATES)),
                         ("fused hidden -> GRPO loss sweep",
                          len(tune_kernels.FUSED_CANDIDATES) + len(tune_kernels.ANY_LOSS_CANDIDATES))):  # fmt: skip
        section = out[out.index(title) :].split("\n\n")[1]  # the table after the heading
        rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # after the header
        assert len(rows) == count, section
        for row in rows:
            error = float(row.strip(" |").split("|")[-1])
            assert error < 1e-4, row  # every candidate computes the same values
