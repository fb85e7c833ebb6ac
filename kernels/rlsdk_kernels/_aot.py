"""Build the kernels for an NVIDIA architecture on a machine without a GPU, and read their resources.

``triton.compile`` lowers a kernel to PTX and the ``ptxas`` shipped in the triton wheel assembles
it, so a CPU machine can check that every default launch configuration compiles for Hopper
(sm_90) and how many registers, spilled bytes and bytes of shared memory it uses. That catches
GPU-only compile errors and register spills in CI; it says nothing about speed.

The kernels must be real ``triton.jit`` functions: run this with ``TRITON_INTERPRET`` unset
(``benchmarks/kernel_resources.py`` and ``tests/test_kernels_compile.py`` start a fresh process).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SHARED_LIMITS", "Resources", "compile_for_gpu", "default_launches"]

_POINTERS = {
    torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.float64: "*fp64",
    torch.int64: "*i64", torch.int32: "*i32",
}  # fmt: skip
#: Shared memory one block may use, in bytes: sm_80 (A100) and sm_90 (H100, H200).
SHARED_LIMITS = {80: 163 * 1024, 90: 227 * 1024}


@dataclass(frozen=True)
class Resources:
    """What ``ptxas`` reports for one compiled kernel."""

    name: str
    registers: int
    spill_bytes: int
    shared_bytes: int
    #: The matrix instructions in the PTX: ``wgmma`` (Hopper tensor cores), ``mma`` (Ampere-style
    #: tensor cores) or ``-`` (none: the kernel has no ``tl.dot``, or multiplies with FMAs).
    matrix_instructions: str = "-"


def compile_for_gpu(
    name: str, kernel: Any, args: dict[str, Any], constexprs: dict[str, Any], *, num_warps: int, arch: int = 90
) -> Resources:
    """Compile ``kernel`` for ``sm_{arch}`` and return its resources.

    Args:
        name: A label for the report.
        kernel: A ``triton.jit`` function.
        args: Every runtime argument by name: a torch dtype for a pointer to that dtype, an int
            (``i32``) or a float (``fp32``) for a scalar.
        constexprs: Every ``tl.constexpr`` argument by name.
        num_warps: Warps per program.
        arch: Compute capability times ten without the dot (90: Hopper).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    if not isinstance(kernel, JITFunction):
        raise RuntimeError(f"{name}: the kernel is interpreted; run without TRITON_INTERPRET=1")
    signature = {}
    for arg in kernel.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif isinstance(args[arg], torch.dtype):
            signature[arg] = _POINTERS[args[arg]]
        else:
            signature[arg] = "fp32" if isinstance(args[arg], float) else "i32"
    source = ASTSource(
        fn=kernel, signature=signature,
        constexprs={(kernel.arg_names.index(k),): v for k, v in constexprs.items()},
    )  # fmt: skip
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    suffix = "a" if arch >= 90 else ""  # sm_90a: the wgmma instructions Triton emits for Hopper
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        ptx = os.path.join(tmp, "kernel.ptx")
        with open(ptx, "w") as f:
            f.write(compiled.asm["ptx"])
        report = subprocess.run(
            [ptxas, f"-arch=sm_{arch}{suffix}", "-v", ptx, "-o", os.path.join(tmp, "kernel.cubin")],
            capture_output=True, text=True, check=True,
        ).stderr  # fmt: skip
    ptx_text = compiled.asm["ptx"]
    matrix = "wgmma" if "wgmma" in ptx_text else "mma" if "mma.sync" in ptx_text else "-"
    registers = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores", report)
    return Resources(
        name=name,
        registers=int(registers.group(1)) if registers else -1,
        spill_bytes=int(spills.group(1)) if spills else 0,
        shared_bytes=int(compiled.metadata.shared),
        matrix_instructions=matrix,
    )


def default_launches(
    dtype: torch.dtype = torch.bfloat16,
    logprob_configs: list[Any] | None = None,
    fused_configs: list[Any] | None = None,
) -> list[tuple[str, Any, dict, dict, int]]:
    """``(name, kernel, args, constexprs, num_warps)`` of each kernel, for inputs of ``dtype`` at
    N=8192, H=4096, V=128256 (the scalars' values do not matter).

    By default each kernel at its default CUDA configuration (the logprob kernels once per
    ``matmul`` path); ``logprob_configs`` (``KernelConfig``) and ``fused_configs``
    (``FusedLossConfig``) replace those of the logprob and fused-loss kernels, and their names then
    say which configuration each is.
    """
    import triton.language as tl

    from rlsdk_kernels import linear_logprob, linear_pg_loss, pg_loss
    from rlsdk_kernels.linear_logprob import CUDA_TILES, KernelConfig

    f32, i64 = torch.float32, torch.int64
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    low = dtype in (torch.bfloat16, torch.float16)
    kernels = linear_logprob.triton_kernels()
    launches: list[tuple[str, Any, dict, dict, int]] = []
    named = logprob_configs is not None
    if logprob_configs is None:
        logprob_configs = [KernelConfig(**tiles, matmul=matmul) for matmul, tiles in CUDA_TILES.items()]
    for config in logprob_configs:
        matmul = config.matmul
        label = f"matmul={matmul}"
        if named:
            label += f" {config.block_n}/{config.block_v}/{config.block_h} w{config.num_warps}"
        tile = {"BLOCK_N": config.block_n, "BLOCK_V": config.block_v, "BLOCK_H": config.block_h}
        common = {"H": 4096, "ACC": acc, "UPCAST": not low, "PRECISION": None if low else "ieee",
                  "FROM_LOGITS": matmul == "torch", **tile}  # fmt: skip
        strides = {"stride_xn": 4096, "stride_xh": 1, "stride_wv": 4096, "stride_wh": 1}
        forward_args = {
            "X": dtype, "W": dtype, "Z": dtype, "Y": i64, "M_OUT": f32, "S_OUT": f32, "P_OUT": f32, "T_OUT": f32,
            "N": 8192, "V": 128256, "stride_zn": 128256, "stride_part": 8192, "inv_temp": 1.0, **strides,
        }  # fmt: skip
        launches.append((
            f"logprob forward, {label}", kernels["forward"], forward_args,
            {**common, "BLOCKS_PER_SPLIT": 64, "WITH_ENTROPY": True}, config.num_warps,
        ))  # fmt: skip
        grad_args = {
            "X": dtype, "W": dtype, "Y": i64, "LSE": f32, "ENT": f32, "G_LP": f32, "G_ENT": f32, "DZ": dtype,
            "N": 8192, "v_start": 0, "v_stop": 8192, "stride_dzn": 8192, "inv_temp": 1.0, "ignore_index": -100,
            **strides,
        }  # fmt: skip
        launches.append((
            f"logprob backward dz, {label}", kernels["grad_logits"], grad_args,
            {**common, "HAS_G_LP": True, "HAS_G_ENT": True}, config.num_warps,
        ))  # fmt: skip
    flags = {"HAS_REF": True, "USE_KL": True, "KL_KIND": 3, "KL_STRAIGHT": False, "HAS_DUAL": True,
             "HAS_DELTA": True, "HAS_LR_CLAMP": True, "HAS_IN_CLAMP": True, "HAS_OUT_CLAMP": True}  # fmt: skip
    rows_args = {
        "Z": dtype, "stride_z": 128256, "Y": i64, "OLD": f32, "REF": f32, "ADV": f32, "MASK": f32, "WTOK": f32,
        "PARAM": f32, "LP_OUT": f32, "ENT_OUT": f32, "STATS": f32, "n_rows": 1536, "inv_temp": 1.0,
        "entropy_coef": 0.01,
    }  # fmt: skip
    named = fused_configs is not None
    for fused in fused_configs or [linear_pg_loss.FusedLossConfig()]:
        label = f" {fused.block_n}/{fused.block_v} w{fused.num_warps}" if named else ""
        launches.append((
            f"fused hidden -> loss rows{label}", linear_pg_loss.triton_kernel(), rows_args,
            {"V": 128256, **flags, "WRITE_GRAD": True, "COMPUTE": acc, "NSTAT": linear_pg_loss.NUM_STATS,
             "BLOCK_N": fused.block_n, "BLOCK_V": fused.block_v},
            fused.num_warps,
        ))  # fmt: skip
    pg_args = {
        "lp_ptr": f32, "old_ptr": f32, "ref_ptr": f32, "adv_ptr": f32, "mask_ptr": f32, "scale_ptr": f32,
        "param_ptr": f32, "grad_ptr": f32, "stats_ptr": f32, "T": 1024, "n_blocks": 1,
    }  # fmt: skip
    launches.append((
        "clipped pg loss", pg_loss.triton_kernel(), pg_args,
        {**flags, "COMPUTE": tl.float32, "NSTAT": pg_loss.NUM_STATS, "BLOCK": pg_loss.BLOCK_T}, 4,
    ))  # fmt: skip
    unique = {launch[0]: launch for launch in launches}  # configurations that differ in buffers alone build once
    return list(unique.values())
