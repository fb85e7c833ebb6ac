"""Registers, spills and shared memory of every kernel's default CUDA build, without a GPU.

Compiles each kernel at its default launch configuration for Hopper (sm_90) or Ampere (sm_80) with triton's own
``ptxas`` (``rlsdk_kernels._aot``) and prints a markdown table, for bf16 and fp32 inputs.
It needs triton but no GPU. Static numbers only: they show compile errors and register spills,
not speed.

    python benchmarks/kernel_resources.py               # Hopper (H100, H200)
    python benchmarks/kernel_resources.py --arch 80     # Ampere (A100)
    python benchmarks/kernel_resources.py --candidates  # the configurations benchmarks/tune_kernels.py
                                                        # tries (bf16), instead of the defaults
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # before triton is imported: real compiled kernels

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))  # before the package is installed


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 1 when a build fails, spills, or exceeds the architecture's shared memory."""
    import argparse

    import triton

    from rlsdk_kernels._aot import SHARED_LIMITS, compile_for_gpu, default_launches

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, choices=sorted(SHARED_LIMITS), default=90, help="compute capability x 10")
    parser.add_argument("--candidates", action="store_true", help="the tuning candidates (bf16) instead")
    args = parser.parse_args(argv)
    arch = args.arch
    dtypes, configs = (torch.bfloat16, torch.float32), {}
    if args.candidates:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from tune_kernels import CANDIDATES, FUSED_CANDIDATES

        from rlsdk_kernels.linear_logprob import CUDA_TILES, KernelConfig
        from rlsdk_kernels.linear_pg_loss import FusedLossConfig

        dtypes = (torch.bfloat16,)
        configs = {
            "logprob_configs": [KernelConfig(**{**CUDA_TILES[c.get("matmul", "torch")], **c}) for c in CANDIDATES],
            "fused_configs": [FusedLossConfig(**c) for c in FUSED_CANDIDATES],
        }
    print(f"triton {triton.__version__}, torch {torch.__version__}, target sm_{arch} (ptxas from the triton wheel)\n")
    print("| kernel | inputs | warps | registers | spilled bytes | shared memory bytes | matrix instructions |")
    print("|---|---|---|---|---|---|---|")
    bad = 0
    for dtype in dtypes:
        for name, kernel, launch_args, constexprs, warps in default_launches(dtype, **configs):
            try:
                r = compile_for_gpu(name, kernel, launch_args, constexprs, num_warps=warps, arch=arch)
            except Exception as exc:  # noqa: BLE001 - report every kernel
                print(f"| {name} | {str(dtype)[6:]} | {warps} | failed: {type(exc).__name__}: {str(exc)[:80]} | | | |")
                bad += 1
                continue
            bad += r.spill_bytes > 0 or r.shared_bytes > SHARED_LIMITS[arch]
            print(
                f"| {name} | {str(dtype)[6:]} | {warps} | {r.registers} | {r.spill_bytes} | {r.shared_bytes} "
                f"| {r.matrix_instructions} |"
            )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
