"""A short tile sweep of the ``triton`` logprob backend on one GPU (about two minutes at most).

For a handful of :class:`rlsdk_kernels.linear_logprob.KernelConfig` choices (both ``matmul`` paths:
reduction tiles and buffer budgets of the cuBLAS path, ``tl.dot`` tiles of the Triton path, 4 or 8
warps) it times, with ``triton.testing.do_bench`` (medians), the forward alone
(log-probs without the autograd graph, as for the old and reference policies) and forward + backward
with a random per-token upstream gradient, on bf16 inputs at

- shape ``a`` (default): N=8192, H=4096, V=128256
- shape ``b``: N=16384, H=2048, V=151936

and prints a markdown table sorted by the forward + backward time, with the TFLOP/s each reaches
(2NHV for the forward, 8NHV for forward + backward with its recomputed logits), the extra peak memory
of a step and max |logp - fp32 reference| as a sanity check. A configuration that fails (for example
out of shared memory) gets a row saying so. The sweep stops early once ``--budget`` seconds are used.

    python benchmarks/tune_kernels.py             # shape a
    python benchmarks/tune_kernels.py --shape b

Without CUDA it prints that it needs a GPU and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SHAPES = {"a": (8192, 4096, 128256), "b": (16384, 2048, 151936)}

#: KernelConfig options of each candidate, over the CUDA default of its ``matmul`` path: the default
#: first, then the ``matmul="torch"`` variants (reduction tiles, buffer budgets), then ``matmul="triton"``
#: tiles (the sweep may stop early). All build for sm_90 without register spills in bf16
#: (``benchmarks/kernel_resources.py``).
CANDIDATES: list[dict[str, Any]] = [
    {},
    {"block_v": 128},
    {"num_warps": 8},
    {"block_v": 512, "num_warps": 8},
    {"forward_mib": 448.0, "backward_mib": 192.0},
    {"forward_mib": 112.0, "backward_mib": 48.0},
    {"matmul": "triton"},
    {"matmul": "triton", "block_h": 64},
    {"matmul": "triton", "block_n": 64, "block_v": 256, "block_h": 64},
    {"matmul": "triton", "block_n": 128, "block_v": 64, "block_h": 128},
    {"matmul": "triton", "block_n": 32, "block_v": 128, "block_h": 64},
    {"matmul": "triton", "block_n": 64, "block_v": 64, "block_h": 64},
]


@dataclass
class Row:
    """One configuration's measurements (times in ms; None where it failed or was not run)."""

    config: Any
    fwd_ms: float | None = None
    step_ms: float | None = None
    peak_gib: float | None = None
    error: float | None = None
    failure: str | None = None


def reference_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int = 2048) -> Tensor:
    """fp32 matmul and log-softmax in token chunks (never the whole ``[N, V]`` fp32 logits)."""
    w = weight.float()
    out = []
    with torch.no_grad():
        for start in range(0, hidden.shape[0], chunk):
            logits = hidden[start : start + chunk].float() @ w.T
            y = targets[start : start + chunk, None]
            out.append(torch.log_softmax(logits, dim=-1).gather(-1, y).squeeze(-1))
    return torch.cat(out)


def bench(fn: Callable[[], Any]) -> float:
    """Median ms of ``fn`` (already warmed up) by ``triton.testing.do_bench``."""
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median"))


def measure(config: Any, hidden: Tensor, weight: Tensor, targets: Tensor, upstream: Tensor, ref: Tensor) -> Row:
    """Time the forward alone and forward + backward of one configuration."""
    from rlsdk_kernels.linear_logprob import fused_linear_logprobs

    row = Row(config)
    try:
        with torch.no_grad():
            lp, _ = fused_linear_logprobs(hidden, weight, targets, 1.0, False, config=config)  # compiles
            row.error = float((lp - ref).abs().max())

            def forward() -> None:
                fused_linear_logprobs(hidden, weight, targets, 1.0, False, config=config)

            row.fwd_ms = bench(forward)
        hx = hidden.detach().requires_grad_(True)
        wx = weight.detach().requires_grad_(True)

        def step() -> None:
            hx.grad = wx.grad = None
            lp, _ = fused_linear_logprobs(hx, wx, targets, 1.0, False, config=config)
            (lp * upstream).sum().backward()

        step()  # compiles the backward kernel
        torch.cuda.synchronize()
        hx.grad = wx.grad = None
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        row.peak_gib = (torch.cuda.max_memory_allocated() - base) / 2**30
        row.step_ms = bench(step)
    except Exception as exc:  # noqa: BLE001 - one configuration failing must not end the sweep
        row.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''}"
    finally:
        torch.cuda.empty_cache()
    return row


def table(rows: list[Row], shape: tuple[int, int, int], default: Any) -> str:
    """Markdown table of ``rows``, fastest forward + backward first, failures last."""
    n, h, v = shape
    base = next((r.step_ms for r in rows if r.config == default and r.step_ms), None)
    columns = (
        "matmul", "block_n", "block_v", "block_h", "warps", "fwd / bwd MiB", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms",
        "fwd+bwd TFLOP/s", "vs default", "extra peak GiB", "max abs logp error",
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in sorted(rows, key=lambda r: (r.step_ms is None, r.step_ms or 0.0, r.fwd_ms or 0.0)):
        c = r.config
        head = (
            f"| {c.matmul} | {c.block_n} | {c.block_v} | {c.block_h} | {c.num_warps} | "
            f"{c.forward_mib:g} / {c.backward_mib:g} |"
        )
        if r.failure:
            lines.append(f"{head} failed: {r.failure} | | | | | | |")
            continue
        fwd = f"{r.fwd_ms:.1f} | {2 * n * h * v / r.fwd_ms / 1e9:.0f}" if r.fwd_ms else "- | -"
        step = f"{r.step_ms:.1f} | {8 * n * h * v / r.step_ms / 1e9:.0f}" if r.step_ms else "- | -"
        speed = f"{base / r.step_ms:.2f}x" if base and r.step_ms else "-"
        peak = f"{r.peak_gib:.3f}" if r.peak_gib is not None else "-"
        err = f"{r.error:.4f}" if r.error is not None else "-"
        lines.append(f"{head} {fwd} | {step} | {speed} | {peak} | {err} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; 0 also when there is no GPU (nothing to tune)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default="a", help="a: 8192x4096x128256 (default), b: 16384x2048x151936"
    )
    parser.add_argument("--budget", type=float, default=90.0, help="start no configuration after this many seconds")
    parser.add_argument("--limit", type=int, default=len(CANDIDATES), help="try only the first LIMIT configurations")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("tune_kernels.py needs a CUDA GPU (the tile sweep times compiled Triton kernels); nothing to do here.")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))  # when rlsdk is not installed
    from rlsdk_kernels.linear_logprob import CUDA_TILES, KernelConfig

    started = time.monotonic()
    n, h, v = SHAPES[args.shape]
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(n, h, generator=g, device="cuda").to(torch.bfloat16)
    weight = (torch.randn(v, h, generator=g, device="cuda") / h**0.5).to(torch.bfloat16)
    targets = torch.randint(0, v, (n,), generator=g, device="cuda")
    upstream = torch.randn(n, generator=g, device="cuda")
    ref = reference_logprobs(hidden, weight, targets)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"shape {args.shape}: N={n}, H={h}, V={v}, bf16, temperature 1, no entropy; budget {args.budget:.0f} s\n")

    configs = [
        KernelConfig(**{**CUDA_TILES[options.get("matmul", "torch")], **options}) for options in CANDIDATES[: args.limit]
    ]
    rows: list[Row] = []
    for config in configs:
        if time.monotonic() - started > args.budget:
            print(f"budget reached: {len(configs) - len(rows)} configurations not run")
            break
        t0 = time.monotonic()
        row = measure(config, hidden, weight, targets, upstream, ref)
        rows.append(row)
        result = row.failure or f"fwd {row.fwd_ms:.1f} ms, fwd+bwd {row.step_ms:.1f} ms, err {row.error:.4f}"
        print(f"  {config.matmul} {config.block_n}/{config.block_v}/{config.block_h} w{config.num_warps} "
              f"{config.forward_mib:g}/{config.backward_mib:g} MiB: {result} ({time.monotonic() - t0:.1f} s)")
    print(f"\n### triton logprob backend tile sweep, shape {args.shape} (N={n}, H={h}, V={v}, bf16)\n")
    print(table(rows, (n, h, v), configs[0]))
    print(f"\nsweep took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
