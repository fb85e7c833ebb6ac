"""``benchmarks/kernels.py`` runs without a GPU: its CPU table, and (slow) every GPU row interpreted.

The GPU rows are what a rare, 15-minute GPU session spends its time on, so a row that fails to build
or a goal check that crashes must show up here first, in CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import torch

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU modes of the benchmark")


def _run(*args: str, timeout: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script sets it itself
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--quick", *args],
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
    out = _run(timeout=120)
    assert "no GPU" in out
    rows = _rows(out)
    for name in ("rlsdk `torch` backend", "rlsdk `chunked` backend", "rlsdk `chunked` backend + `clipped_pg`"):
        ms, peak, error = rows[name]
        assert float(ms) > 0 and peak == "n/a (CPU)" and float(error) < 1e-4, (name, rows[name])
    if hasattr(torch.nn, "LinearCrossEntropyOptions"):  # PyTorch's own chunked op, a peer from 2.13 on
        assert float(rows["PyTorch `linear_cross_entropy` (chunked), reduction none"][2]) < 1e-4


@pytest.mark.slow
def test_every_gpu_row_runs_interpreted() -> None:
    out = _run("--all-methods", timeout=600)
    rows = _rows(out)
    ours = [name for name in rows if "(ours" in name]
    assert len(ours) == 5, ours  # two logprob paths, the fused loss on the backend, the 6THV op twice
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
