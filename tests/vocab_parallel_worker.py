"""One rank of a vocabulary-parallel run of ``fused_linear_logprobs`` (tests/test_kernels_vocab_parallel.py).

Run as ``python vocab_parallel_worker.py RANK WORLD INIT_FILE OUT_DIR CASES_JSON``, one process per rank,
with gloo: on the CPU with the kernels interpreted, or, with ``VOCAB_PARALLEL_DEVICE=cuda``, every rank
on the one GPU (gloo moves CUDA tensors too; NCCL wants a GPU per rank). Each case draws the full
inputs from its seed, takes this rank's rows of the weight, runs forward and backward with
``vocab_group`` and saves, per case,
``OUT_DIR/{name}.{rank}.pt``: the inputs, the outputs, ``dX`` and this shard's ``dW``; or the
message of the ``ValueError`` the case expects.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta

DEVICE = os.environ.get("VOCAB_PARALLEL_DEVICE", "cpu")
if DEVICE == "cpu":
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from rlsdk_kernels.linear_logprob import KernelConfig, fused_linear_logprobs  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def inputs(case: dict) -> dict[str, torch.Tensor]:
    """The full (unsharded) inputs of ``case``, the same on every rank."""
    g = torch.Generator().manual_seed(case["seed"])
    h, v = case["h"], sum(case["sizes"])
    n = case["n"] + case.get("extra_rows_per_rank", 0) * (len(case["sizes"]) - 1)
    dtype = DTYPES[case["dtype"]]
    targets = torch.randint(0, v, (n,), generator=g)
    targets[: len(case.get("targets", []))] = torch.tensor(case.get("targets", []), dtype=torch.long)
    for i in case.get("ignored", []):
        targets[i] = case["ignore_index"]
    return {
        "hidden": torch.randn(n, h, generator=g, dtype=torch.float64).to(dtype),
        "weight": (torch.randn(v, h, generator=g, dtype=torch.float64) * 3 / h**0.5).to(dtype),
        "targets": targets,
        "g_lp": torch.randn(n, generator=g, dtype=torch.float64),
        "g_ent": torch.randn(n, generator=g, dtype=torch.float64),
    }


def run(case: dict, rank: int) -> dict:
    full = {k: v.to(DEVICE) for k, v in inputs(case).items()}
    start = sum(case["sizes"][:rank])
    hidden = full["hidden"][: case["n"] + case.get("extra_rows_per_rank", 0) * rank].clone().requires_grad_(True)
    shard = full["weight"][start : start + case["sizes"][rank]].clone().requires_grad_(True)
    targets = full["targets"][: hidden.shape[0]]
    config = KernelConfig(block_n=16, block_v=16, block_h=16, vocab_splits=2, backward_slice=20, forward_chunk=9,
                          matmul=case["matmul"])  # fmt: skip
    try:
        lp, ent = fused_linear_logprobs(
            hidden,
            shard,
            targets,
            case["temperature"],
            case["with_entropy"],
            case["ignore_index"],
            config,
            vocab_group=dist.group.WORLD,
        )
    except ValueError as exc:
        return {"error": str(exc)}
    objective = (lp * full["g_lp"].to(lp.dtype)).sum()
    if ent is not None:
        objective = objective + (ent * full["g_ent"].to(ent.dtype)).sum()
    objective.backward()
    out = {**full, "lp": lp.detach(), "ent": None if ent is None else ent.detach(), "dx": hidden.grad, "dw": shard.grad}
    return {**{k: None if v is None else v.cpu() for k, v in out.items()}, "start": start}


def main() -> None:
    rank, world, init_file, out_dir, cases = sys.argv[1:6]
    rank, world = int(rank), int(world)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))  # fmt: skip
    try:
        for case in json.loads(cases):
            result = run(case, rank)
            path = os.path.join(out_dir, f"{case['name']}.{rank}.pt")
            torch.save(result, path + ".tmp")
            os.replace(path + ".tmp", path)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
