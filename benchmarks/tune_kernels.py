"""A short sweep of the Triton kernels' tiles and buffer budgets on one GPU (about two minutes at most).

Two sweeps, on bf16 inputs at shape ``a`` (default: N=8192, H=4096, V=128256) or ``b`` (N=16384,
H=2048, V=151936):

1. the ``triton`` logprob backend: a handful of :class:`rlsdk_kernels.linear_logprob.KernelConfig`
   choices (both ``matmul`` paths: reduction tiles and buffer budgets of the cuBLAS path, ``tl.dot``
   tiles of the Triton path, 4 or 8 warps). Timed: the forward alone (log-probs without the
   autograd graph, as for the old and reference policies) and forward + backward with a random
   per-token upstream gradient. TFLOP/s counts 2NHV for the forward and 8NHV for forward + backward
   (its logits are recomputed);
2. the fused hidden states -> GRPO loss ops (6NHV): a handful of
   :class:`rlsdk_kernels.linear_pg_loss.FusedLossConfig` choices of ``fused_linear_pg_loss``
   (chunk budget, row-kernel tiles and warps) and of ``fuse_loss_mib`` for the ``triton`` backend's
   ``loss_from_hidden`` with ``clipped_pg``; forward + backward of the loss of
   ``benchmarks/kernels.py`` (token-mean, k3 KL, eps 0.2 / 0.28, B = N / 1024 sequences with the
   last 100 tokens masked).

Each sweep prints a markdown table sorted by the forward + backward time (medians, by
``benchmarks/kernels.py``'s ``measure``), with the extra peak memory of a step and the error against
the fp32 reference as a sanity check. A configuration that fails (for example out of shared memory)
gets a row saying so. Each sweep stops early once its ``--budget`` seconds are used.

    python benchmarks/tune_kernels.py             # shape a
    python benchmarks/tune_kernels.py --shape b
    python benchmarks/tune_kernels.py --shape tiny  # without a GPU: every candidate at N=64, H=32,
                                                    # V=1001, fp32, Triton interpreted (times mean nothing)

Without CUDA and without ``--shape tiny`` it prints that it needs a GPU and exits 0.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
SHAPES = {"a": (8192, 4096, 128256), "b": (16384, 2048, 151936), "tiny": (64, 32, 1001)}

#: KernelConfig options of each logprob candidate, over the CUDA default of its ``matmul`` path: the
#: default first, then the ``matmul="torch"`` variants (reduction tiles, buffer budgets), then
#: ``matmul="triton"`` tiles (the sweep may stop early). All build for sm_90 without register spills
#: in bf16 (``benchmarks/kernel_resources.py``).
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

#: FusedLossConfig options of each ``fused_clipped_pg`` candidate, over its default (the ``triton``
#: backend builds its config from ``fuse_loss_mib``, ``fuse_loss_tokens`` and ``grad_accum``; the row
#: tiles and warps stay the defaults of :class:`~rlsdk_kernels.linear_pg_loss.FusedLossConfig`): the chunk budget
#: (fewer, larger chunks read and write ``dW`` fewer times; 480 MiB is about the 0.5 GiB goal), then
#: the row kernel's tiles and warps. All build for sm_90 without register spills in bf16 (64 to 223
#: registers).
FUSED_CANDIDATES: list[dict[str, Any]] = [
    {},
    {"chunk_mib": 256.0},
    {"chunk_mib": 480.0},
    {"block_v": 1024, "num_warps": 4},
    {"block_n": 1, "num_warps": 4},
    {"block_n": 4},
    {"block_v": 4096},
    {"block_n": 1, "block_v": 4096},
]
#: ``fuse_loss_mib`` of the ``triton`` backend's ``loss_from_hidden`` candidates (with ``clipped_pg``):
#: a 1024-token row of bf16 logits takes 250 MiB at V=128256, so these hold 1, 3 and 6 rows a chunk
#: (the loss runs in Python once per chunk).
ANY_LOSS_CANDIDATES: list[float] = [384.0, 768.0, 1536.0]


def _bench_module() -> Any:
    """``benchmarks/kernels.py`` (its ``measure``, reference and GRPO batch), loaded by path."""
    spec = importlib.util.spec_from_file_location("rlsdk_bench_kernels", HERE / "kernels.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Row:
    """One configuration's measurements (times in ms; None where it failed or was not run)."""

    config: Any
    fwd_ms: float | None = None
    step_ms: float | None = None
    peak_gib: float | None = None
    error: float | None = None
    failure: str | None = None


def _run(row: Row, body: Callable[[Row], None], cuda: bool) -> Row:
    """``body(row)``; an exception becomes the row's failure (one configuration must not end the sweep)."""
    try:
        body(row)
    except Exception as exc:  # noqa: BLE001
        row.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''}"
    finally:
        if cuda:
            torch.cuda.empty_cache()
    return row


def sweep(
    configs: list[Any], body: Callable[[Row], None], budget: float, cuda: bool, describe: Callable[[Any], str]
) -> list[Row]:
    """Measure each configuration with ``body`` until ``budget`` seconds are used; print a line each."""
    started = time.monotonic()
    rows: list[Row] = []
    for config in configs:
        if time.monotonic() - started > budget:
            print(f"budget reached: {len(configs) - len(rows)} configurations not run")
            break
        t0 = time.monotonic()
        row = _run(Row(config), body, cuda)
        rows.append(row)
        fwd = f"fwd {row.fwd_ms:.1f} ms, " if row.fwd_ms is not None else ""
        result = row.failure or f"{fwd}fwd+bwd {row.step_ms:.1f} ms, err {row.error:.2e}"
        print(f"  {describe(config)}: {result} ({time.monotonic() - t0:.1f} s)")
    return rows


def table(rows: list[Row], columns: list[str], head: Callable[[Any], list[str]], flop: dict[str, float]) -> str:
    """Markdown table of ``rows``, fastest forward + backward first, failures last.

    ``head(config)`` gives the leading cells; ``flop`` the FLOP of the forward (key ``fwd``, optional)
    and of forward + backward (``step``), for the TFLOP/s columns.
    """
    timed = [("fwd", "fwd")] if "fwd" in flop else []
    timed.append(("fwd+bwd", "step"))
    names = columns + [c for label, _ in timed for c in (f"{label} ms", f"{label} TFLOP/s")]
    names += ["vs default", "extra peak GiB", "max abs error"]
    base = rows[0].step_ms if rows else None  # the default is always the first candidate
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for r in sorted(rows, key=lambda r: (r.step_ms is None, r.step_ms or 0.0)):
        cells = head(r.config)
        if r.failure:
            lines.append("| " + " | ".join(cells) + f" | failed: {r.failure} |" + " |" * (len(names) - len(cells) - 1))
            continue
        for _, key in timed:
            ms = r.fwd_ms if key == "fwd" else r.step_ms
            cells += [f"{ms:.1f}", f"{flop[key] / ms / 1e9:.0f}"] if ms else ["-", "-"]
        cells.append(f"{base / r.step_ms:.2f}x" if base and r.step_ms else "-")
        cells.append(f"{r.peak_gib:.3f}" if r.peak_gib is not None else "n/a (CPU)")
        cells.append(f"{r.error:.2e}" if r.error is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both sweeps; 0 also when there is no GPU (nothing to tune)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shape",
        choices=list(SHAPES),
        default="a",
        help="a: 8192x4096x128256 (default), b: 16384x2048x151936, tiny: a CPU check",
    )
    parser.add_argument("--budget", type=float, default=80.0, help="logprob sweep: no configuration after this many s")
    parser.add_argument("--fused-budget", type=float, default=50.0, help="the same for the fused-loss sweep")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and args.shape != "tiny":
        print(
            "tune_kernels.py needs a CUDA GPU (the sweep times compiled Triton kernels); "
            "--shape tiny runs every candidate interpreted instead."
        )
        return 0
    if not cuda:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels import triton
    sys.path.insert(0, str(HERE.parent / "kernels"))  # when rlsdk is not installed
    bench = _bench_module()
    import rlsdk
    from rlsdk_kernels.linear_logprob import CUDA_TILES, KernelConfig, fused_linear_logprobs
    from rlsdk_kernels.linear_pg_loss import FusedLossConfig, fused_linear_pg_loss
    from rlsdk_kernels.plugin import FusedClippedPG, TritonLogprobBackend

    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    reps = 10 if cuda else 1
    n, h, v = SHAPES[args.shape]
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g).to(device, dtype)
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(device, dtype)
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    upstream = torch.randn(n, generator=g).to(device)
    ref = bench.reference_logprobs(hidden, weight, targets)
    hx, wx = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    where = f"{torch.cuda.get_device_name()}" if cuda else "CPU, Triton interpreted: a check that it runs"
    print(f"device: {where}, torch {torch.__version__}")
    print(f"shape {args.shape}: N={n}, H={h}, V={v}, {str(dtype)[6:]}, temperature 1\n")

    def logprob_body(row: Row) -> None:
        config = row.config
        with torch.no_grad():
            lp, _ = fused_linear_logprobs(hidden, weight, targets, 1.0, False, config=config)
            row.error = float((lp - ref).abs().max())
            row.fwd_ms, _ = bench.measure(
                lambda: fused_linear_logprobs(hidden, weight, targets, 1.0, False, config=config), cuda, reps
            )

        def step() -> None:
            hx.grad = wx.grad = None
            lp, _ = fused_linear_logprobs(hx, wx, targets, 1.0, False, config=config)
            (lp * upstream).sum().backward()

        row.step_ms, row.peak_gib = bench.measure(step, cuda, reps)

    start = time.monotonic()
    print("logprob backend (no entropy):")
    configs = [KernelConfig(**{**CUDA_TILES[c.get("matmul", "torch")], **c}) for c in CANDIDATES]
    rows = sweep(configs, logprob_body, args.budget, cuda,
                 lambda c: f"{c.matmul} {c.block_n}/{c.block_v}/{c.block_h} w{c.num_warps} "
                           f"{c.forward_mib:g}/{c.backward_mib:g} MiB")  # fmt: skip
    print(f"\n### triton logprob backend sweep, shape {args.shape} (N={n}, H={h}, V={v}, {str(dtype)[6:]})\n")
    print(table(
        rows, ["matmul", "block_n", "block_v", "block_h", "warps", "fwd / bwd MiB"],
        lambda c: [c.matmul, str(c.block_n), str(c.block_v), str(c.block_h), str(c.num_warps),
                   f"{c.forward_mib:g} / {c.backward_mib:g}"],
        {"fwd": 2 * n * h * v, "step": 8 * n * h * v},
    ))  # fmt: skip

    batch = bench.grpo_batch(ref)
    used = batch.mask.numel()
    ref_loss = float(rlsdk.create("loss", "clipped_pg", **bench.GRPO)(ref[:used].view(batch.mask.shape), batch).loss)
    fused_loss = FusedClippedPG(**bench.GRPO)
    loss_opts = {**fused_loss.opts, "entropy_coef": fused_loss.entropy_coef}
    clipped = rlsdk.create("loss", "clipped_pg", **bench.GRPO)
    h_used, w_used = hx[:used].detach().requires_grad_(True), wx

    def fused_body(row: Row) -> None:
        config = row.config

        def step() -> float:
            h_used.grad = w_used.grad = None
            if isinstance(config, FusedLossConfig):
                loss, _, _, _ = fused_linear_pg_loss(
                    h_used, w_used, targets[:used], batch, temperature=1.0, config=config, **loss_opts
                )
            else:
                out = TritonLogprobBackend(fuse_loss_mib=config).loss_from_hidden(
                    h_used, w_used, targets[:used], batch, clipped, temperature=1.0
                )
                if out is None:
                    raise RuntimeError(f"loss_from_hidden declined: a row exceeds {config:g} MiB")
                loss = out.output.loss
            value = float(loss.detach())
            loss.backward()
            return value

        row.error = abs(step() - ref_loss)
        row.step_ms, row.peak_gib = bench.measure(step, cuda, reps)

    def head(config: Any) -> list[str]:
        if isinstance(config, FusedLossConfig):
            return ["fused_clipped_pg", f"{config.chunk_mib:g}", str(config.block_n), str(config.block_v),
                    str(config.num_warps)]  # fmt: skip
        return ["loss_from_hidden", f"{config:g}", "-", "-", "-"]

    print(f"\nfused hidden -> GRPO loss, B={batch.mask.shape[0]} x L={batch.mask.shape[1]}:")
    fused_configs = [FusedLossConfig(**c) for c in FUSED_CANDIDATES] + ANY_LOSS_CANDIDATES
    fused_rows = sweep(fused_configs, fused_body, args.fused_budget, cuda, lambda c: " ".join(head(c)))
    print(f"\n### fused hidden -> GRPO loss sweep, shape {args.shape} ({used} tokens, {str(dtype)[6:]})\n")
    print(table(fused_rows, ["op", "chunk MiB", "block_n", "block_v", "warps"], head, {"step": 6 * used * h * v}))
    print(f"\nsweeps took {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
