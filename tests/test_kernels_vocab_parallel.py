"""Vocabulary-parallel ``fused_linear_logprobs`` (``vocab_group``): real process groups on the CPU.

Each run starts one process per rank (``tests/vocab_parallel_worker.py``, gloo), every rank holding a
slice of the weight's rows: on the CPU with the kernels under the Triton interpreter, and, where
there is a GPU, again with every rank on it (the kernels compiled). The results must equal the
float64 reference on the whole weight, be the same bits on every rank, and the shards' ``dW`` must
add up to the whole ``dW``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlsdk_kernels.linear_logprob import reference_logprobs, triton_available

pytestmark = pytest.mark.skipif(not triton_available(), reason="needs triton")

WORKER = Path(__file__).with_name("vocab_parallel_worker.py")
BASE = {"n": 37, "h": 24, "seed": 0, "dtype": "float64", "matmul": "torch", "temperature": 0.7,
        "with_entropy": True, "ignore_index": -100, "ignored": [3, 20]}  # fmt: skip
TWO_RANKS = [
    # uneven shards; the first targets fall on both sides of the shard boundary (49 | 50)
    {**BASE, "name": "fp64", "sizes": [50, 73], "targets": [0, 49, 50, 122]},
    {**BASE, "name": "tl_dot", "matmul": "triton", "sizes": [50, 73], "targets": [49, 50]},
    {**BASE, "name": "fp32_no_entropy", "dtype": "float32", "with_entropy": False, "sizes": [64, 59]},
    # ignore_index 5 is also a local id of the second shard (target 55): it must not be ignored there
    {**BASE, "name": "ignore_5", "ignore_index": 5, "sizes": [50, 73], "targets": [55, 5, 50]},
    {**BASE, "name": "ranks_disagree", "sizes": [50, 73], "extra_rows_per_rank": 1, "raises": True},
    {**BASE, "name": "target_beyond_vocab", "sizes": [50, 73], "targets": [123], "raises": True},
]
THREE_RANKS = [{**BASE, "name": "three_shards", "sizes": [40, 1, 82], "targets": [40, 41, 39]}]
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def launch(tmp_path: Path, world: int, cases: list[dict], device: str) -> dict[str, list[dict]]:
    """Run ``cases`` on ``world`` worker processes; ``{case name: [result of rank 0, 1, ...]}``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["VOCAB_PARALLEL_DEVICE"] = device
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the ranks share this machine: no hostname lookup needed
    if device == "cpu":
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    init = tmp_path / "rendezvous"
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world), str(init), str(tmp_path), json.dumps(cases)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in range(world)
    ]
    try:
        logs = [proc.communicate(timeout=300)[0] for proc in procs]
    finally:  # a rank that hangs (its peer died before the rendezvous, say) is not left running
        for proc in procs:
            proc.kill()
    for rank, (proc, log) in enumerate(zip(procs, logs)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{log}"
    return {
        case["name"]: [torch.load(tmp_path / f"{case['name']}.{rank}.pt", weights_only=False) for rank in range(world)]
        for case in cases
    }


def reference(result: dict, case: dict) -> dict[str, torch.Tensor]:
    """float64 log-probs, entropies and gradients on the whole weight (``reference_logprobs`` + autograd)."""
    hidden = result["hidden"].double().requires_grad_(True)
    weight = result["weight"].double().requires_grad_(True)
    lp, ent = reference_logprobs(hidden, weight, result["targets"], case["temperature"], case["ignore_index"])
    objective = (lp * result["g_lp"]).sum() + ((ent * result["g_ent"]).sum() if case["with_entropy"] else 0)
    objective.backward()
    return {"lp": lp.detach(), "ent": ent.detach(), "dx": hidden.grad, "dw": weight.grad}


def check(results: list[dict], case: dict) -> None:
    ref = reference(results[0], case)
    tol = {"atol": 1e-10, "rtol": 1e-9} if case["dtype"] == "float64" else {"atol": 2e-5, "rtol": 1e-4}
    first = results[0]
    for rank, got in enumerate(results):
        # the same bits on every rank: the partials are merged in rank order everywhere
        assert torch.equal(got["lp"], first["lp"]) and torch.equal(got["dx"], first["dx"]), f"rank {rank}"
    torch.testing.assert_close(first["lp"].double(), ref["lp"], **tol)
    torch.testing.assert_close(first["dx"].double(), ref["dx"], **tol)
    if case["with_entropy"]:
        torch.testing.assert_close(first["ent"].double(), ref["ent"], **tol)
    else:
        assert first["ent"] is None
    dw = torch.cat([got["dw"] for got in results])  # the shards, in rank order, make the whole dW
    torch.testing.assert_close(dw.double(), ref["dw"], **tol)
    assert [got["start"] for got in results] == [sum(case["sizes"][:r]) for r in range(len(results))]
    ignored = results[0]["targets"] == case["ignore_index"]
    assert ignored.any() and (first["lp"][ignored] == 0).all() and (first["dx"][ignored] == 0).all()


@pytest.fixture(scope="module", params=DEVICES)
def two_ranks(request, tmp_path_factory):
    return launch(tmp_path_factory.mktemp("vocab2"), 2, TWO_RANKS, request.param)


@pytest.mark.parametrize("case", [c for c in TWO_RANKS if not c.get("raises")], ids=lambda c: c["name"])
def test_two_shards_equal_the_whole_weight(two_ranks, case):
    check(two_ranks[case["name"]], case)


def test_a_nonnegative_ignore_index_is_not_confused_with_a_local_id(two_ranks):
    results = two_ranks["ignore_5"]
    targets = results[0]["targets"]
    # global 55 is the second shard's local id 5, equal to ignore_index: it is trained, global 5 is not
    assert targets[0] == 55 and targets[1] == 5
    for result in results:
        assert result["lp"][0] < 0 and result["lp"][1] == 0
        assert (result["dx"][0] != 0).any() and (result["dx"][1] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_three_shards_one_of_a_single_row(tmp_path, device):
    check(launch(tmp_path, 3, THREE_RANKS, device)["three_shards"], THREE_RANKS[0])


def test_ranks_that_disagree_on_the_tokens_all_raise(two_ranks):
    for rank, result in enumerate(two_ranks["ranks_disagree"]):
        assert "every rank must pass the same hidden states" in result["error"], rank
        assert "(37, 24), (38, 24)" in result["error"]


def test_a_target_beyond_the_global_vocabulary_is_named(two_ranks):
    for result in two_ranks["target_beyond_vocab"]:
        message = result["error"]
        assert "[0, 123)" in message and "got 123" in message and "ids [" in message
