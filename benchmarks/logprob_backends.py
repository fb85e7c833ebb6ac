"""Time and peak memory of the logprob backends, forward + backward, on the CPU.

Each (backend, shape) runs in its own process so its peak resident memory (``ru_maxrss``) is its
own; "extra peak" is that peak minus the resident memory after the inputs are allocated. The last
rows train on half of the tokens (rows of 256 tokens, the last 128 of each padding), through
``rlsdk.trainer.trained_logprobs`` as the trainer does: the backend sees the trained tokens only.
Prints a markdown table (paste it into docs/benchmarks.md with the date, machine and versions).

    python benchmarks/logprob_backends.py
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

SHAPES = {"small": (2048, 256, 32768), "large": (2048, 512, 131072)}  # N tokens, H hidden, V vocab
BACKENDS = {"torch": {}, "chunked": {"chunk_size": 4096}}
PADDED = [("torch", "small", 0.5), ("chunked", "small", 0.5)]  # (backend, shape, trained fraction)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(backend_name: str, shape: str, trained: float = 1.0, repeats: int = 3) -> dict:
    import torch

    import rlsdk
    from rlsdk.trainer import trained_logprobs

    torch.manual_seed(0)
    n, h, v = SHAPES[shape]
    hidden = torch.randn(n, h, requires_grad=True)
    weight = (torch.randn(v, h) * 0.02).requires_grad_()
    targets = torch.randint(0, v, (n,))
    g_lp, g_ent = torch.randn(n), torch.randn(n)
    backend = rlsdk.create("logprob_backend", backend_name, **BACKENDS[backend_name])
    mask = None if trained >= 1 else (torch.arange(n) % 256 < 256 * trained).float()
    base = rss_mib()
    times = []
    for _ in range(repeats):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        lp, ent = trained_logprobs(backend, hidden, weight, targets, mask, temperature=0.7, with_entropy=True)
        ((lp * g_lp).sum() + (ent * g_ent).sum()).backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"ms": 1000 * min(times), "extra_peak_mib": peak - base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--one", nargs=3, metavar=("BACKEND", "SHAPE", "TRAINED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], float(args.one[2]))))
        return
    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print("| backend | shape (N, H, V) | trained | fwd+bwd ms | extra peak MiB | logits fp32 MiB |")
    print("|---|---|---|---|---|---|")
    cases = [(backend, shape, 1.0) for shape in SHAPES for backend in BACKENDS] + PADDED
    for backend, shape, trained in cases:
        n, h, v = SHAPES[shape]
        command = [sys.executable, __file__, "--one", backend, shape, str(trained)]
        row = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(
            f"| {backend} | {n}, {h}, {v} | {trained:.0%} | {row['ms']:.0f} | {row['extra_peak_mib']:.0f} "
            f"| {n * v * 4 / 2**20:.0f} |"
        )


if __name__ == "__main__":
    main()
