"""Any loss straight from hidden states (``rlsdk_kernels.linear_loss``, the ``triton`` backend's
``loss_from_hidden``) against the ``torch`` backend followed by the same loss.

In float64 the two agree to rounding: loss, every metric, ``dX`` and ``dW``. Losses: ``clipped_pg``
(several options, entropy bonus included), ``reinforce``, ``fused_clipped_pg`` on log-probs, and a
sequence-level loss written here (a GSPO-style sequence ratio), whose value would be wrong if a chunk
split a row. On a machine without CUDA the Triton kernels run under the interpreter.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlsdk
import rlsdk.testing
from rlsdk import LossOutput
from rlsdk.functional import aggregate

pytest.importorskip("triton")

from rlsdk_kernels import plugin as kernels_plugin
from rlsdk_kernels.linear_logprob import (
    CPU_TILES,
    CUDA_TILES,
    KernelConfig,
    reference_logprobs,
    triton_available,
)
from rlsdk_kernels.linear_loss import fused_linear_loss, row_chunks, token_budget
from rlsdk_kernels.plugin import TritonLogprobBackend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CONFIG = KernelConfig(**(CUDA_TILES["torch"] if DEVICE == "cuda" else CPU_TILES))
TEMPERATURE = 0.8

pytestmark = pytest.mark.skipif(
    not TritonLogprobBackend().supports(DEVICE) or not triton_available(), reason="the Triton kernels cannot run here"
)


class SequenceRatioLoss:
    """A GSPO-style loss: one importance ratio per sequence, ``exp(mean_t (lp - old))``, clipped.

    ``-sum_i min(s_i A_i, clip(s_i, 1 - eps, 1 + eps) A_i) / num_seqs`` with ``A_i`` the sequence's
    first advantage: its value depends on every token of a row, so a chunk must not split rows.
    """

    name = "sequence_ratio"
    needs_ref_logprobs = False
    needs_entropy = False

    def __call__(self, logprobs, batch):
        valid = batch.mask > 0
        delta = torch.where(valid, logprobs - batch.old_logprobs, torch.zeros((), dtype=logprobs.dtype))
        tokens = batch.mask.sum(-1)
        ratio = torch.exp(delta.sum(-1) / tokens.clamp_min(1))
        adv = batch.advantages[:, 0]
        per_seq = -torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv) * (tokens > 0)
        return LossOutput(
            loss=per_seq.sum() / batch.num_seqs,
            metrics={"ratio": float(aggregate(ratio.detach()[:, None].expand_as(batch.mask), batch, "token-mean"))},
        )


LOSSES = {
    "clipped_pg": lambda: rlsdk.create("loss", "clipped_pg"),
    "clipped_pg+kl+entropy": lambda: rlsdk.create(
        "loss", "clipped_pg", kl_coef=0.05, entropy_coef=0.02, dual_clip_c=3.0, eps_high=0.28, agg="seq-mean-token-mean"
    ),
    "reinforce": lambda: rlsdk.create("loss", "reinforce", agg="seq-mean-token-sum", entropy_coef=0.01),
    "fused_clipped_pg on log-probs": lambda: rlsdk.create("loss", "fused_clipped_pg", kl_coef=0.05),
    "sequence ratio": SequenceRatioLoss,
}


def make(rows: int = 5, length: int = 7, hidden: int = 12, vocab: int = 37, seed: int = 0, dtype=torch.float64):
    """Hidden states, weight, targets and a ragged batch (an empty row, a hole) in ``dtype`` on ``DEVICE``."""
    g = torch.Generator().manual_seed(seed)
    batch = rlsdk.testing.make_train_batch(seed, rows=rows, length=length, group_size=1)
    x = torch.randn(rows * length, hidden, generator=g, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=g, dtype=torch.float64) * 0.7
    y = torch.randint(0, vocab, (rows * length,), generator=g)
    fields = {
        f.name: (v.to(DEVICE, dtype) if v.is_floating_point() else v.to(DEVICE))
        for f in dataclasses.fields(batch) if isinstance(v := getattr(batch, f.name), torch.Tensor)
    }  # fmt: skip
    batch = dataclasses.replace(batch, **fields)
    # old/ref log-probs near the truth, so ratios sit around 1 and some clip
    truth = torch.log_softmax(x @ w.T / TEMPERATURE, -1).gather(-1, y[:, None]).view(rows, length).to(DEVICE, dtype)
    noise = torch.randn(rows, length, generator=g, dtype=torch.float64).to(DEVICE, dtype)
    batch = dataclasses.replace(batch, old_logprobs=truth + 0.2 * noise, ref_logprobs=truth - 0.1 * noise)
    return x.to(DEVICE, dtype), w.to(DEVICE, dtype), y.to(DEVICE), batch


def reference(loss, x, w, y, batch):
    """``(loss, metrics, dX, dW)`` of PyTorch log-probs (``log_softmax`` in the inputs' compute dtype,
    the ``torch`` backend's maths) followed by ``loss``."""
    hx, wx = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    lp, ent = reference_logprobs(hx, wx, y, TEMPERATURE)
    shape = batch.mask.shape
    b = dataclasses.replace(batch, entropy=ent.view(shape) if getattr(loss, "needs_entropy", False) else None)
    result = loss(lp.view(shape), b)
    result.loss.backward()
    return float(result.loss.detach()), result.metrics, hx.grad, wx.grad


def fused(loss, x, w, y, batch, chunk_mib=1e9, **kw):
    """``(loss, metrics, dX, dW, logprobs, entropy)`` of the fused path."""
    hx, wx = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    result = fused_linear_loss(
        hx, wx, y, batch, loss, temperature=TEMPERATURE, config=CONFIG, chunk_mib=chunk_mib, **kw
    )
    assert result is not None
    out, lp, ent = result
    out.loss.backward()
    return float(out.loss.detach()), out.metrics, hx.grad, wx.grad, lp, ent


def mib_for_rows(rows: int, length: int, vocab: int, dtype=torch.float64) -> float:
    """A ``chunk_mib`` that holds ``rows * length`` tokens (so each chunk has at least ``rows`` rows)."""
    return (rows + 0.5) * length * vocab * torch.empty((), dtype=dtype).element_size() / 2**20


def assert_same(got, want, rel=1e-9, abs_=1e-12):
    loss, metrics, gx, gw = got[:4]
    r_loss, r_metrics, r_gx, r_gw = want
    assert loss == pytest.approx(r_loss, rel=rel, abs=abs_)
    assert list(metrics) == list(r_metrics)
    for key, value in r_metrics.items():
        assert float(metrics[key]) == pytest.approx(float(value), rel=max(rel, 1e-6), abs=max(abs_, 1e-7)), key
    for mine, ref in ((gx, r_gx), (gw, r_gw)):
        assert mine.dtype == ref.dtype and mine.shape == ref.shape
        assert float((mine - ref).abs().max()) <= abs_ + rel * float(ref.abs().max()) * 10


@pytest.mark.parametrize("rows_per", [1, 2, 5])
@pytest.mark.parametrize("name", LOSSES)
def test_equals_backend_then_loss_in_float64(name, rows_per):
    x, w, y, batch = make(seed=3)
    loss = LOSSES[name]()
    want = reference(loss, x, w, y, batch)
    got = fused(loss, x, w, y, batch, chunk_mib=mib_for_rows(rows_per, 7, 37))
    assert_same(got, want)


def count_host_reads(monkeypatch) -> list[str]:
    """Record every read of a tensor's value by Python (each one waits for the GPU when on CUDA)."""
    reads: list[str] = []
    for method in ("item", "tolist", "__float__", "__int__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, method)

        def spy(self, *args, _original=original, _method=method):
            reads.append(_method)
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, method, spy)
    return reads


@pytest.mark.parametrize("name", ["clipped_pg+kl+entropy", "fused_clipped_pg on log-probs", "sequence ratio"])
def test_no_host_read_per_chunk_unless_the_loss_makes_one(name, monkeypatch):
    """The chunk loop never waits for the device; only a loss whose metrics are Python floats does,
    once per chunk. The built-in losses return tensor metrics."""
    x, w, y, batch = make(rows=4, seed=8)
    loss = LOSSES[name]()
    counts = []
    for rows_per in (4, 1):
        reads = count_host_reads(monkeypatch)
        hx, wx = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        out, _, _ = fused_linear_loss(
            hx, wx, y, batch, loss, temperature=TEMPERATURE, config=CONFIG, chunk_mib=mib_for_rows(rows_per, 7, 37)
        )
        counts.append(len(reads))
        monkeypatch.undo()
        assert all(isinstance(v, torch.Tensor) for v in out.metrics.values()) == (name != "sequence ratio")
    chunks = row_chunks(batch.mask.sum(-1).int().tolist(), token_budget(37, torch.float64, mib_for_rows(1, 7, 37)))
    assert len(chunks) > 1
    if name == "sequence ratio":  # one float(...) per chunk
        assert counts[1] == counts[0] + len(chunks) - 1
    else:
        assert counts[1] == counts[0]


def test_logprobs_and_entropies_are_returned_zero_where_masked():
    x, w, y, batch = make(seed=4)
    *_, lp, ent = fused(LOSSES["clipped_pg"](), x, w, y, batch)
    ref_lp, ref_ent = reference_logprobs(x, w, y, TEMPERATURE)
    valid = batch.mask > 0
    assert torch.allclose(lp[valid], ref_lp.view(valid.shape)[valid], rtol=1e-10, atol=1e-12)
    assert torch.allclose(ent[valid], ref_ent.view(valid.shape)[valid], rtol=1e-10, atol=1e-12)
    assert bool((lp[~valid] == 0).all()) and bool((ent[~valid] == 0).all())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings, under the interpreter
def test_non_finite_logits_at_masked_tokens_do_not_leak():
    """Masked tokens whose logits overflow to inf (hidden rows of 1e200): loss, dX and dW stay those of
    a clean input, and the masked rows of dX are 0."""
    x, w, y, batch = make(seed=5)
    masked = (batch.mask.reshape(-1) == 0).nonzero().flatten()
    assert masked.numel() > 3
    huge = x.clone()
    huge[masked[:2]] = 1e200
    huge[masked[2]] = float("nan")  # not even 0 * NaN in dW: masked tokens never reach the GEMMs
    clean = x.clone()
    clean[masked] = 0.0  # masked tokens do not change the loss: the truth is the clean input's
    loss = LOSSES["clipped_pg+kl+entropy"]()
    got = fused(loss, huge, w, y, batch, chunk_mib=mib_for_rows(2, 7, 37))
    assert all(bool(torch.isfinite(g).all()) for g in got[2:4])
    assert bool((got[2][masked] == 0).all())
    assert_same(got, reference(loss, clean, w, y, batch))


def test_only_trained_tokens_reach_the_kernels(monkeypatch):
    """The GEMMs and kernels see the trained tokens only, so a row padded beyond the budget still fits."""
    import rlsdk_kernels.linear_loss as module

    x, w, y, batch = make(rows=6, length=9, seed=12)
    mask = batch.mask.clone()
    mask[:, 7:] = 0  # no row uses its last two positions
    batch = dataclasses.replace(batch, mask=mask)
    lengths = batch.mask.sum(-1).int()
    assert int(lengths.max()) == 7
    seen = []
    real = module.reduce_rows
    monkeypatch.setattr(module, "reduce_rows", lambda x_c, *a: seen.append(x_c.shape[0]) or real(x_c, *a))
    loss = LOSSES["clipped_pg+kl+entropy"]()
    budget_mib = mib_for_rows(1, 8, 37) / 1.5 * 1.01  # 8 tokens' logits: less than a row of 9 tokens
    assert token_budget(37, torch.float64, budget_mib) == 8
    assert_same(fused(loss, x, w, y, batch, chunk_mib=budget_mib), reference(loss, x, w, y, batch))
    assert sum(seen) == int(lengths.sum()) and len(seen) > 1


@pytest.mark.parametrize("name", ["clipped_pg+kl+entropy", "sequence ratio"])
def test_every_token_trained_takes_views_not_copies(name, monkeypatch):
    """With no padding the chunks are slices of the hidden states (no gather), and the result is exact."""
    import rlsdk_kernels.linear_loss as module

    x, w, y, batch = make(rows=4, length=6, seed=13)
    batch = dataclasses.replace(batch, mask=torch.ones_like(batch.mask), num_tokens=24.0, num_seqs=4.0)
    views = []
    real = module.reduce_rows
    monkeypatch.setattr(module, "reduce_rows", lambda x_c, *a: views.append(x_c._is_view()) or real(x_c, *a))
    loss = LOSSES[name]()
    assert_same(fused(loss, x, w, y, batch, chunk_mib=mib_for_rows(1, 6, 37)), reference(loss, x, w, y, batch))
    assert views == [True] * 4  # one row a chunk, each a slice of the hidden states
    views.clear()
    fused(loss, *make(rows=4, length=6, seed=13), chunk_mib=mib_for_rows(1, 6, 37))  # with padding: gathered
    assert views and not any(views)


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 12), max_size=12), budget=st.integers(0, 30))
def test_row_chunks_cover_the_rows_within_the_budget(counts, budget):
    chunks = row_chunks(counts, budget)
    if any(c > budget for c in counts):
        assert chunks is None
        return
    assert [r for r0, r1 in chunks for r in range(r0, r1)] == list(range(len(counts)))
    assert all(r1 > r0 for r0, r1 in chunks)
    sums = [sum(counts[r0:r1]) for r0, r1 in chunks]
    assert all(total <= budget for total in sums)
    # greedy: no chunk could have taken the next chunk's first row
    assert all(total + counts[r1] > budget for total, (_, r1) in zip(sums, chunks[:-1]))


def test_backward_scales_by_the_upstream_gradient_and_refuses_a_second_pass():
    x, w, y, batch = make(seed=6)
    loss = LOSSES["reinforce"]()
    _, _, gx, gw = reference(loss, x, w, y, batch)
    hx, wx = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out, _, _ = fused_linear_loss(hx, wx, y, batch, loss, temperature=TEMPERATURE, config=CONFIG)
    (3.0 * out.loss).backward(retain_graph=True)
    assert torch.allclose(hx.grad, 3.0 * gx, rtol=1e-9, atol=1e-12) and torch.allclose(
        wx.grad, 3.0 * gw, rtol=1e-9, atol=1e-12
    )
    with pytest.raises(RuntimeError, match="backward ran twice"):
        out.loss.backward()


def test_no_gradient_work_under_no_grad(monkeypatch):
    from rlsdk_kernels import linear_loss

    calls = []
    grad = linear_loss.logits_to_grad
    monkeypatch.setattr(linear_loss, "logits_to_grad", lambda *a, **k: calls.append(1) or grad(*a, **k))
    x, w, y, batch = make(seed=7)
    loss = LOSSES["clipped_pg+kl+entropy"]()
    with torch.no_grad():
        out, _, _ = fused_linear_loss(
            x.clone().requires_grad_(True), w, y, batch, loss, temperature=TEMPERATURE, config=CONFIG
        )
    assert calls == [] and not out.loss.requires_grad
    assert float(out.loss) == pytest.approx(reference(loss, x, w, y, batch)[0], rel=1e-9)


def test_weight_only_and_hidden_only_gradients():
    x, w, y, batch = make(seed=8)
    loss = LOSSES["clipped_pg"]()
    _, _, gx, gw = reference(loss, x, w, y, batch)
    hx = x.clone().requires_grad_(True)
    fused_linear_loss(hx, w, y, batch, loss, temperature=TEMPERATURE, config=CONFIG)[0].loss.backward()
    assert torch.allclose(hx.grad, gx, rtol=1e-9, atol=1e-12)
    wx = w.clone().requires_grad_(True)
    fused_linear_loss(x, wx, y, batch, loss, temperature=TEMPERATURE, config=CONFIG)[0].loss.backward()
    assert torch.allclose(wx.grad, gw, rtol=1e-9, atol=1e-12)


def test_a_row_too_long_for_the_budget_is_declined():
    x, w, y, batch = make(seed=9)
    assert token_budget(37, torch.float64, mib_for_rows(1, 7, 37) * 0.5) < int(batch.mask.sum(-1).max())
    result = fused_linear_loss(
        x, w, y, batch, LOSSES["clipped_pg"](), config=CONFIG, chunk_mib=mib_for_rows(1, 7, 37) * 0.5
    )
    assert result is None


@pytest.mark.parametrize("grad_accum", ["weight", "float32"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_low_precision_is_no_worse_than_torch_in_the_same_dtype(dtype, grad_accum):
    """bf16/fp32 inputs, 4 chunks: each output's error against the float64 truth is at most the
    ``torch`` backend's in the same dtype plus 1e-2 (bf16) or 1e-5 (fp32) of its largest magnitude."""
    x, w, y, batch = make(rows=8, length=9, hidden=32, vocab=203, seed=10)
    loss = LOSSES["clipped_pg+kl+entropy"]()
    truth = reference(loss, x, w, y, batch)
    low = dataclasses.replace(
        batch, **{f: getattr(batch, f).float() for f in ("mask", "advantages", "old_logprobs", "ref_logprobs")}
    )
    same = reference(loss, x.to(dtype), w.to(dtype), y, low)
    got = fused(loss, x.to(dtype), w.to(dtype), y, low, chunk_mib=mib_for_rows(2, 9, 203, dtype), grad_accum=grad_accum)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    assert abs(got[0] - truth[0]) <= abs(same[0] - truth[0]) + tol * max(abs(truth[0]), 1e-3)
    for mine, torch_same, ref in zip(got[2:4], same[2:4], truth[2:4]):
        assert mine.dtype == dtype
        err, err_torch = float((mine.double() - ref).abs().max()), float((torch_same.double() - ref).abs().max())
        assert err <= err_torch + tol * float(ref.abs().max()), (err, err_torch)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 6), length=st.integers(1, 9), vocab=st.integers(2, 90), rows_per=st.integers(1, 6),
    name=st.sampled_from(sorted(LOSSES)), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_property_any_shape_any_chunking(rows, length, vocab, rows_per, name, seed):
    x, w, y, batch = make(rows=rows, length=length, hidden=8, vocab=vocab, seed=seed)
    loss = LOSSES[name]()
    assert_same(
        fused(loss, x, w, y, batch, chunk_mib=mib_for_rows(rows_per, length, vocab)), reference(loss, x, w, y, batch)
    )


def test_backend_capability_and_its_options():
    x, w, y, batch = make(seed=11)
    loss = LOSSES["reinforce"]()
    expected = reference(loss, x, w, y, batch)
    longest = int((batch.mask > 0).sum(-1).max())  # trained tokens of the longest row
    for options in ({"fuse_loss_mib": mib_for_rows(2, 7, 37)}, {"fuse_loss_tokens": longest + 1}):
        backend = rlsdk.create("logprob_backend", "triton", **options)
        assert backend.strategy(loss) is kernels_plugin.ANY_LOSS
        hx, wx = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        result = backend.loss_from_hidden(hx, wx, y, batch, loss, temperature=TEMPERATURE)
        assert isinstance(result, rlsdk.HiddenLossOutput)
        result.output.loss.backward()
        assert_same((float(result.output.loss.detach()), result.output.metrics, hx.grad, wx.grad), expected)
    # the longest row does not fit a smaller token budget: declined (the trainer then runs the backend, the loss)
    short = rlsdk.create("logprob_backend", "triton", fuse_loss_tokens=longest - 1)
    assert short.loss_from_hidden(x, w, y, batch, loss, temperature=TEMPERATURE) is None
    off = rlsdk.create("logprob_backend", "triton", fuse_loss=False)
    assert off.loss_from_hidden(x, w, y, batch, loss, temperature=TEMPERATURE) is None
    for option, value, message in (
        ("fuse_loss", "yes", "logprob.fuse_loss must be true or false, got 'yes'"),
        ("fuse_loss_mib", 0, "logprob.fuse_loss_mib must be a finite number > 0, got 0"),
        ("fuse_loss_tokens", 0, "logprob.fuse_loss_tokens must be None (from fuse_loss_mib) or an integer >= 1, got 0"),
        ("grad_accum", "bf16", "logprob.grad_accum must be one of 'weight', 'float32', got 'bf16'"),
    ):
        with pytest.raises(rlsdk.ConfigError) as info:
            TritonLogprobBackend(**{option: value})
        assert message in str(info.value)


def test_bad_shapes_are_refused():
    x, w, y, batch = make(seed=12)
    with pytest.raises(ValueError, match="one row per token of mask"):
        fused_linear_loss(x[:-1], w, y[:-1], batch, LOSSES["clipped_pg"](), config=CONFIG)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU run is the interpreter check")
@pytest.mark.parametrize("loss_name", ["reinforce", "clipped_pg"])
def test_training_through_the_fused_path_matches_torch(loss_name, same_training, monkeypatch):
    """Two steps, two micro-batches, ``logprob.backend=triton``: the update goes through
    ``loss_from_hidden`` and the metrics equal those of ``logprob.backend=torch``."""
    from rlsdk_kernels import linear_loss

    calls = []
    original = linear_loss.fused_linear_loss
    monkeypatch.setattr(linear_loss, "fused_linear_loss", lambda *a, **k: calls.append(1) or original(*a, **k))
    common = ["train.micro_batches=2", "train.lr=1e-5", f"loss.name={loss_name}", "loss.entropy_coef=0.03"]
    rows, compared = same_training(
        {backend: [*common, f"logprob.backend={backend}"] for backend in ("torch", "triton")}
    )
    assert compared > 10 and math.isfinite(rows["triton"][-1]["loss"])
    assert len(calls) == 4  # 2 steps x 2 micro-batches went through the fused path


def test_runs_eagerly_inside_torch_compile(same_under_compile):
    """A compiled step around :func:`fused_linear_loss` (a ``torch.compiler.disable`` region, so a
    graph break) gives the eager values and gradients."""
    x, w, y, batch = make()
    loss = LOSSES["clipped_pg"]()

    def step(h, wt):
        out = fused_linear_loss(torch.tanh(h), wt, y, batch, loss, temperature=TEMPERATURE, config=CONFIG,
                                chunk_mib=mib_for_rows(2, batch.mask.shape[1], w.shape[0]))  # fmt: skip
        return 3 * out[0].loss

    same_under_compile(step, x, w)
