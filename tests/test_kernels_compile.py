"""Every kernel's default CUDA build compiles for Ampere (sm_80) and Hopper (sm_90), without a GPU
and without register spills; the bf16 ``tl.dot`` tiles use the tensor cores (``wgmma`` on sm_90).

``benchmarks/kernel_resources.py`` lowers each kernel with ``triton.compile`` for sm_90 and
assembles it with the ``ptxas`` of the triton wheel (``rlsdk_kernels._aot``). This catches what the
interpreter cannot: GPU-only compile errors, register spills, shared memory over the sm_90 limit.
It runs in a fresh process because the other kernel tests set ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Not imported here: importing triton before the interpreter tests set TRITON_INTERPRET=1 would
# fix the mode of the whole session.
from rlsdk_kernels.linear_logprob import triton_problem  # reads triton's metadata, never imports it

pytestmark = pytest.mark.skipif(
    triton_problem() is not None, reason=f"needs a triton that runs the kernels: {triton_problem()}"
)

ROOT = Path(__file__).resolve().parents[1]


def _resources(*args: str) -> list[str]:
    """The kernel rows of ``benchmarks/kernel_resources.py ARGS`` (which must exit 0)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernel_resources.py"), *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if re.match(r"\| (logprob|fused|clipped)", line)]


@pytest.mark.parametrize("arch", [80, 90])
def test_default_builds_compile_without_spills(arch):
    rows = _resources("--arch", str(arch))
    assert len(rows) == 12, rows  # 6 kernels x (bf16, fp32)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        registers, spills, shared = int(cells[3]), int(cells[4]), int(cells[5])
        assert 0 < registers <= 255 and spills == 0 and shared <= {80: 163, 90: 227}[arch] * 1024, row
        if "matmul=triton" in cells[0] and cells[1] == "bfloat16":  # the tl.dot tiles run on tensor cores
            assert cells[6] == {80: "mma", 90: "wgmma"}[arch], row


@pytest.mark.slow
def test_tuning_candidates_compile_without_spills():
    """Every configuration ``benchmarks/tune_kernels.py`` tries builds for sm_90 in bf16 without
    spills (exit status 0 says so: a spill or a failed build exits 1), so no GPU minute goes to one
    that cannot win."""
    rows = _resources("--candidates")
    assert len(rows) == 27, rows  # distinct builds: 10 logprob configurations x 2 kernels, 6 fused, 1 loss
