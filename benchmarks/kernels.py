"""Fused log-prob and GRPO-loss kernels against eager torch, torch.compile, Liger-Kernel and CCE.

On one GPU, for each shape (``a``: N=8192, H=4096, V=128256; ``b``: N=16384, H=2048, V=151936), bf16
hidden states and LM head, every method runs forward + backward of per-token log-probabilities with a
random per-token upstream gradient (as in RL) on the same inputs, in one process. Each is checked
against an fp32 reference (fp32 matmul, fp32 log-softmax): max |logp - ref|. Times are medians of
``triton.testing.do_bench``; "extra peak GiB" is ``torch.cuda.max_memory_allocated`` above the memory
allocated before the step. Also printed: the measured bf16 matmul TFLOP/s and the 6THV / 8THV floors
(see docs/kernels.md), and the GRPO loss from hidden states (B = N / 1024
sequences of 1024 tokens, the last 100 masked, token-mean, k3 KL with beta = 0.04, eps 0.2 / 0.28),
including rlsdk's fused hidden-states -> loss ops (6THV): the ``triton`` backend's
``loss_from_hidden`` with ``clipped_pg`` (the any-loss strategy) and with ``fused_clipped_pg`` (its
strategy: one Triton kernel for log-probs and loss), the latter with both ``grad_accum`` settings.

Peers run only when installed (``pip install liger-kernel cut-cross-entropy``; PyTorch's own chunked
``linear_cross_entropy`` from torch 2.13 on); the rlsdk triton backend and fused loss run when
``rlsdk_kernels`` imports. Without a GPU the script runs small fp32 CPU shapes of the torch paths
only (PyTorch's chunked ``linear_cross_entropy``, rlsdk's ``torch`` and ``chunked`` backends), and
says so; ``--all-methods`` runs every GPU row there instead (Triton interpreted), to check that each
row and the goal check run before a GPU session spends its minutes on them.

    python benchmarks/kernels.py                          # both shapes (GPU) or the CPU shapes
    python benchmarks/kernels.py --quick                  # a tiny smoke run
    python benchmarks/kernels.py --quick --all-methods    # without a GPU: every GPU row, interpreted
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kernels"))  # before the package is installed

import rlsdk  # noqa: E402

GPU_SHAPES = {"a": (8192, 4096, 128256), "b": (16384, 2048, 151936)}
GPU_QUICK = {"quick": (2048, 512, 32003)}
CPU_SHAPES = {"cpu": (512, 128, 8191)}
CPU_QUICK = {"cpu-quick": (64, 32, 1001)}
SEQ_LEN, MASKED_TAIL = 1024, 100
GRPO = {"eps_low": 0.2, "eps_high": 0.28, "kl_coef": 0.04, "kl_estimator": "k3", "agg": "token-mean"}

Step = Callable[[], None]


# --------------------------------------------------------------------------------------------------
# Measurement


def measure(fn: Callable[[], Any], cuda: bool, reps: int) -> tuple[float, float | None]:
    """``(median ms, extra peak GiB or None on the CPU)`` of ``fn`` (one fwd+bwd step)."""
    if cuda:
        import triton.testing

        torch.cuda.empty_cache()
        fn()  # warm-up (compilation, autotuning)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        ms = triton.testing.do_bench(fn, warmup=5, rep=max(50, 20 * reps), return_mode="median")
        return float(ms), peak
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), None


def matmul_tflops(cuda: bool, quick: bool) -> float:
    """Measured dense matmul throughput (bf16 8192^3 on the GPU, fp32 on the CPU)."""
    n = (2048 if quick else 8192) if cuda else (256 if quick else 1024)
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(n, n, device="cuda" if cuda else "cpu", dtype=dtype)
    b = torch.randn_like(a)
    ms, _ = measure(lambda: a @ b, cuda, reps=3 if quick else 10)
    return 2 * n**3 / (ms * 1e-3) / 1e12


# --------------------------------------------------------------------------------------------------
# Log-prob methods: each maps (hidden, weight, targets) -> fp32 log-probs [N] with autograd


def eager_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor) -> Tensor:
    """Eager PyTorch: matmul in the input dtype, fp32 log-softmax, gather."""
    logits = (hidden @ weight.T).float()
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def reference_logprobs(hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int = 2048) -> Tensor:
    """fp32 matmul and log-softmax, in token chunks (the truth every method is compared with)."""
    w = weight.detach().float()
    out = []
    with torch.no_grad():
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk].detach().float()
            out.append(torch.log_softmax(h @ w.T, dim=-1).gather(-1, targets[start : start + chunk, None]).squeeze(-1))
    return torch.cat(out)


def _rlsdk_backend(name: str, **options: Any) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    backend = rlsdk.create("logprob_backend", name, **options)
    return lambda h, w, t: backend(h, w, t, temperature=1.0).logprobs


def _triton_backend(**options: Any) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    from rlsdk_kernels.plugin import TritonLogprobBackend

    backend = TritonLogprobBackend(**options)
    return lambda h, w, t: backend(h, w, t, temperature=1.0).logprobs


def _liger() -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    loss = LigerFusedLinearCrossEntropyLoss(reduction="none")
    return lambda h, w, t: -loss(w, h, t).float()


def _cce() -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    from cut_cross_entropy import linear_cross_entropy

    return lambda h, w, t: -linear_cross_entropy(h, w, t, reduction="none").float()


def _torch_chunked_ce() -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``torch.nn.functional.linear_cross_entropy`` with chunking on (PyTorch >= 2.13; automatic options)."""
    if not hasattr(torch.nn, "LinearCrossEntropyOptions"):
        raise ImportError(f"torch {torch.__version__} has no chunked linear_cross_entropy", name="torch>=2.13")
    options = torch.nn.LinearCrossEntropyOptions()
    ce = torch.nn.functional.linear_cross_entropy
    return lambda h, w, t: -ce(h, w, t, reduction="none", options=options).float()


LOW_MEMORY_PEERS = ("Liger", "Cut-Cross", "PyTorch `linear_cross_entropy`")


def logprob_methods(every: bool) -> dict[str, Callable[[], Callable[[Tensor, Tensor, Tensor], Tensor]]]:
    """Name -> a builder of the method (a builder may raise ImportError: the method is skipped).

    ``every``: the GPU list (peers and the Triton paths), else the CPU paths only.
    """
    if not every:
        return {
            "PyTorch `linear_cross_entropy` (chunked), reduction none": _torch_chunked_ce,
            "rlsdk `torch` backend": lambda: _rlsdk_backend("torch"),
            "rlsdk `chunked` backend": lambda: _rlsdk_backend("chunked"),
        }
    return {
        "eager PyTorch (bf16 matmul, fp32 log-softmax)": lambda: eager_logprobs,
        "`torch.compile` of the same": lambda: torch.compile(eager_logprobs),
        "Liger `fused_linear_cross_entropy`, reduction none": _liger,
        "Cut-Cross-Entropy `linear_cross_entropy`, reduction none": _cce,
        "PyTorch `linear_cross_entropy` (chunked), reduction none": _torch_chunked_ce,
        "rlsdk `torch` backend": lambda: _rlsdk_backend("torch"),
        "rlsdk `chunked` backend": lambda: _rlsdk_backend("chunked"),
        "rlsdk `triton` backend, cuBLAS logits (ours, default)": _triton_backend,
        "rlsdk `triton` backend, `tl.dot` tiles (ours)": lambda: _triton_backend(matmul="triton"),
    }


# --------------------------------------------------------------------------------------------------
# GRPO from hidden states


def masked_tail(length: int) -> int:
    """Masked tokens at the end of each sequence: 100 of 1024 (a tenth on the tiny CPU shapes)."""
    return MASKED_TAIL if length > 2 * MASKED_TAIL else length // 10


def grpo_batch(ref_lp: Tensor, seed: int = 0) -> rlsdk.TrainBatch:
    """B = N / L sequences of L tokens (last 100 masked), old/ref log-probs near the truth, one advantage per row."""
    n = ref_lp.shape[0]
    length = min(SEQ_LEN, n)
    rows = n // length
    g = torch.Generator().manual_seed(seed)
    shape = (rows, length)
    mask = torch.ones(shape)
    mask[:, length - masked_tail(length) :] = 0.0
    base = ref_lp[: rows * length].view(shape).cpu()
    return rlsdk.TrainBatch(
        mask=mask.to(ref_lp.device),
        advantages=(torch.randn(rows, 1, generator=g) * mask).to(ref_lp.device),
        old_logprobs=(base + 0.05 * torch.randn(shape, generator=g)).to(ref_lp.device),
        ref_logprobs=(base + 0.05 * torch.randn(shape, generator=g)).to(ref_lp.device),
        rewards=torch.rand(rows, generator=g).to(ref_lp.device),
        group_ids=torch.arange(rows).to(ref_lp.device) // 8,
    )


def grpo_tensor_loss(lp: Tensor, old: Tensor, ref: Tensor, adv: Tensor, mask: Tensor, n_tok: float) -> Tensor:
    """The clipped_pg maths with GRPO's options as pure tensor code (compilable): token-mean, k3 KL."""
    lp = torch.where(mask > 0, lp, 0.0)
    ratio = torch.exp((lp - torch.where(mask > 0, old, 0.0)).clamp(-20.0, 20.0))
    adv = torch.where(mask > 0, adv, 0.0)
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - GRPO["eps_low"], 1 + GRPO["eps_high"]))
    x = (lp - torch.where(mask > 0, ref, 0.0)).clamp(-20.0, 20.0)
    kl = (torch.exp(-x) + x - 1.0).clamp(-10.0, 10.0)
    return ((pg + GRPO["kl_coef"] * kl) * mask).sum() / max(n_tok, 1.0)


def grpo_methods(every: bool) -> dict[str, Callable[[], Callable[[Tensor, Tensor, Tensor, rlsdk.TrainBatch], Tensor]]]:
    """Name -> builder of ``f(hidden, weight, targets, batch) -> scalar loss``."""
    clipped = rlsdk.create("loss", "clipped_pg", **GRPO)

    def with_backend(make: Callable[[], Any], loss: Any) -> Callable[..., Tensor]:
        logprobs = make()
        return lambda h, w, t, b: loss(logprobs(h, w, t).view(b.mask.shape), b).loss

    def fused() -> Any:
        from rlsdk_kernels.plugin import FusedClippedPG

        return FusedClippedPG(**GRPO)

    def loss_from_hidden(loss: Callable[[], Any], **options: Any) -> Callable[..., Tensor]:
        """The ``triton`` backend's ``loss_from_hidden`` (the strategy of ``loss``'s type)."""
        from rlsdk_kernels.plugin import TritonLogprobBackend

        backend, fn = TritonLogprobBackend(**options), loss()

        def run(h: Tensor, w: Tensor, t: Tensor, b: rlsdk.TrainBatch) -> Tensor:
            out = backend.loss_from_hidden(h, w, t, b, fn, temperature=1.0)
            if out is None:
                raise RuntimeError("loss_from_hidden declined (a row exceeds fuse_loss_mib)")
            return out.output.loss

        return run

    if not every:
        return {
            "rlsdk `torch` backend + `clipped_pg`": lambda: with_backend(lambda: _rlsdk_backend("torch"), clipped),
            "rlsdk `chunked` backend + `clipped_pg`": lambda: with_backend(lambda: _rlsdk_backend("chunked"), clipped),
        }

    def eager(h: Tensor, w: Tensor, t: Tensor, b: rlsdk.TrainBatch) -> Tensor:
        lp = eager_logprobs(h, w, t).view(b.mask.shape)
        return grpo_tensor_loss(lp, b.old_logprobs, b.ref_logprobs, b.advantages, b.mask, float(b.num_tokens))

    def liger() -> Callable[..., Tensor]:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

        loss = LigerFusedLinearGRPOLoss(
            beta=GRPO["kl_coef"], epsilon_low=GRPO["eps_low"], epsilon_high=GRPO["eps_high"], loss_type="dapo"
        )

        def run(h: Tensor, w: Tensor, t: Tensor, b: rlsdk.TrainBatch) -> Tensor:
            rows, length = b.mask.shape
            out = loss(
                h.view(rows, length, -1),
                w,
                t.view(rows, length),
                b.mask.long(),
                b.advantages[:, 0],
                ref_per_token_logps=b.ref_logprobs,
                old_per_token_logps=b.old_logprobs,
            )
            return out[0] if isinstance(out, tuple) else out

        return run

    return {
        "eager PyTorch": lambda: eager,
        "`torch.compile`": lambda: torch.compile(eager),
        "Liger `LigerFusedLinearGRPOLoss` (chunked)": liger,
        "rlsdk `chunked` backend + `clipped_pg`": lambda: with_backend(lambda: _rlsdk_backend("chunked"), clipped),
        "rlsdk `triton` backend + `fused_clipped_pg` (ours, 8THV)": lambda: with_backend(_triton_backend, fused()),
        "rlsdk `triton` backend `loss_from_hidden`, any loss, here `clipped_pg` (ours, 6THV)": lambda: loss_from_hidden(
            lambda: clipped
        ),
        "rlsdk fused hidden -> loss, dW accumulated in bf16 (ours, 6THV)": lambda: loss_from_hidden(
            fused, grad_accum="weight"
        ),
        "rlsdk fused hidden -> loss, dW accumulated in fp32 (ours, 6THV)": lambda: loss_from_hidden(
            fused, grad_accum="float32"
        ),
    }


# --------------------------------------------------------------------------------------------------
# Driver


def run_table(
    methods: dict[str, Callable[[], Any]],
    make_step: Callable[[Any], Step],
    error: Callable[[Any], float],
    cuda: bool,
    reps: int,
    error_format: str,
) -> dict[str, tuple[float, float | None]]:
    """Print one row per method (a failing or missing method gets a row saying so); ``{label: (ms, GiB)}``."""
    results: dict[str, tuple[float, float | None]] = {}
    for label, build in methods.items():
        try:
            method = build()
            ms, peak = measure(make_step(method), cuda, reps)
            with torch.no_grad():
                err = error(method)
        except ImportError as exc:
            print(f"| {label} | skipped: not installed ({exc.name or exc}) | | |")
            continue
        except Exception as exc:  # a peer failing must not hide the other rows
            print(f"| {label} | failed: {type(exc).__name__}: {str(exc)[:80]} | | |")
            continue
        results[label] = (ms, peak)
        peak_text = f"{peak:.3f}" if peak is not None else "n/a (CPU)"
        print(f"| {label} | {ms:.1f} | {peak_text} | {err:{error_format}} |")
    return results


def check_goals(
    logprob: dict[str, tuple[float, float | None]], grpo: dict[str, tuple[float, float | None]], floor8_ms: float
) -> None:
    """Print each of the issue's goals for each of our rows as met or missed."""

    def gib(peak: float | None, goal: float) -> str:
        if peak is None:
            return f"extra peak not measured on the CPU (goal <= {goal})"
        return f"extra peak {peak:.3f} GiB (goal <= {goal}): {'met' if peak <= goal else 'missed'}"

    print("\nGoals (issue 4), against the peers of this run:\n")
    low_memory = {k: v for k, v in logprob.items() if k.startswith(LOW_MEMORY_PEERS)}
    for label, (ms, peak) in logprob.items():
        if "(ours" not in label:
            continue
        beaten = [k.split(" `")[0] for k, (peer_ms, _) in low_memory.items() if ms < peer_ms]
        print(
            f"- {label}: faster than {len(beaten)} of {len(low_memory)} low-memory peers "
            f"({', '.join(beaten) or 'none'}); {ms / floor8_ms:.2f}x the 8THV floor (goal <= 1.15): "
            f"{'met' if ms <= 1.15 * floor8_ms else 'missed'}; {gib(peak, 0.25)}"
        )
    compiled = grpo.get("`torch.compile`")
    for label, (ms, peak) in grpo.items():
        if "6THV" not in label:
            continue
        speed = f"{ms / compiled[0]:.2f}x torch.compile's time (goal <= 1)" if compiled else "torch.compile: no row"
        met = compiled is not None and ms <= compiled[0]
        print(f"- {label}: {speed}: {'met' if met else 'missed'}; {gib(peak, 0.5)}")


def run_shape(name: str, shape: tuple[int, int, int], cuda: bool, every: bool, reps: int, tflops: float) -> None:
    n, h, v = shape
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=g).to(device, dtype).requires_grad_(True)
    weight = (torch.randn(v, h, generator=g) / h**0.5).to(device, dtype).requires_grad_(True)
    targets = torch.randint(0, v, (n,), generator=g).to(device)
    upstream = torch.randn(n, generator=g).to(device)
    ref = reference_logprobs(hidden, weight, targets)

    def logprob_step(method: Any) -> Step:
        def step() -> None:
            hidden.grad = weight.grad = None
            (method(hidden, weight, targets) * upstream).sum().backward()

        return step

    print(f"\n### shape {name}: N={n}, H={h}, V={v}, {str(dtype).removeprefix('torch.')}, fwd+bwd\n")
    print("| method | ms | extra peak GiB | max abs logp error |")
    print("|---|---|---|---|")
    logprob = run_table(
        logprob_methods(every), logprob_step,
        lambda method: float((method(hidden, weight, targets).float() - ref).abs().max()), cuda, reps, ".4f",
    )  # fmt: skip

    batch = grpo_batch(ref)
    rows, length = batch.mask.shape
    used = rows * length
    hs, ts = hidden[:used], targets[:used]
    ref_loss = float(rlsdk.create("loss", "clipped_pg", **GRPO)(ref[:used].view(rows, length), batch).loss)

    def grpo_step(method: Any) -> Step:
        def step() -> None:
            hidden.grad = weight.grad = None
            method(hs, weight, ts, batch).backward()

        return step

    print(
        f"\nGRPO loss from hidden states, B={rows} x L={length} (last {masked_tail(length)} masked), token-mean, k3 KL"
    )
    trained = int(batch.mask.sum())  # rlsdk's rows leave the masked tokens out of the output layer
    print(
        f"(rlsdk's rows compute the {trained} trained tokens only ({trained / used:.1%}); the other rows all {used})\n"
    )
    print("| GRPO loss, fwd+bwd | ms | extra peak GiB | abs loss error |")
    print("|---|---|---|---|")
    grpo = run_table(
        grpo_methods(every), grpo_step, lambda method: abs(float(method(hs, weight, ts, batch)) - ref_loss),
        cuda, reps, ".2e",
    )  # fmt: skip
    if every:
        check_goals(logprob, grpo, 8 * n * h * v / tflops / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run")
    parser.add_argument("--shapes", default=None, help="comma-separated shape names (GPU: a,b)")
    parser.add_argument(
        "--all-methods", action="store_true",
        help="without a GPU: run the GPU rows (Triton under TRITON_INTERPRET=1) at the CPU shapes; times mean nothing",
    )  # fmt: skip
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    every = cuda or args.all_methods
    shapes = (GPU_QUICK if args.quick else GPU_SHAPES) if cuda else (CPU_QUICK if args.quick else CPU_SHAPES)
    if args.shapes:
        wanted = args.shapes.split(",")
        shapes = {k: v for k, v in {**GPU_SHAPES, **GPU_QUICK, **CPU_SHAPES, **CPU_QUICK}.items() if k in wanted}
    reps = 2 if args.quick else 10
    if cuda:  # TF32 stays off: the fp32 reference and the rlsdk `torch` backend use true fp32 matmuls
        print(f"device: {torch.cuda.get_device_name()} (GPU), torch {torch.__version__}")
    elif every:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before rlsdk.create imports the kernels plugin
        print(
            f"device: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}: no GPU; "
            "--all-methods ran every GPU row in fp32, Triton interpreted: a check that the rows run, "
            "not a measurement"
        )
    else:
        print(
            f"device: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}: no GPU, so "
            "this ran small fp32 CPU shapes of the torch paths only (no GPU peers, no Triton kernels)"
        )
    tflops = matmul_tflops(cuda, args.quick)
    print(f"measured {'bf16' if cuda else 'fp32'} matmul: {tflops:.4g} TFLOP/s")
    for name, (n, h, v) in shapes.items():
        floor6, floor8 = 6 * n * h * v / tflops / 1e9, 8 * n * h * v / tflops / 1e9
        print(f"shape {name}: 6THV floor {floor6:.2f} ms, 8THV floor {floor8:.2f} ms")
    for name, shape in shapes.items():
        run_shape(name, shape, cuda, every, reps, tflops)


if __name__ == "__main__":
    main()
