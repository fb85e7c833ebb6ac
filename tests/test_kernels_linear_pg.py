"""The fused hidden-states -> clipped PG loss (``rlsdk_kernels.linear_pg_loss``) against PyTorch.

The reference is the ``torch`` path in float64: materialised logits, ``log_softmax``, gather,
entropy, then the ``clipped_pg`` loss and autograd. Without CUDA the row kernel runs under the Triton
interpreter (``TRITON_INTERPRET=1``) on tiny odd shapes: ``V`` is never a multiple of the 16-column
tiles, chunks of 5 or 7 tokens cut rows of the batch apart, and the last chunk is short.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rlsdk
import rlsdk.testing
from rlsdk.errors import ConfigError

pytest.importorskip("triton")

from rlsdk_kernels import pg_loss
from rlsdk_kernels import plugin as kernels_plugin
from rlsdk_kernels.linear_pg_loss import FusedLossConfig, chunk_size, fused_linear_pg_loss
from rlsdk_kernels.plugin import FusedClippedPG

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TINY = FusedLossConfig(chunk_tokens=5, block_n=2, block_v=16)
BASE = {
    "eps_low": 0.2, "eps_high": 0.28, "dual_clip_c": None, "delta": None, "logratio_clamp": 20.0, "kl_coef": 0.05,
    "kl_estimator": "k3", "kl_input_clamp": 20.0, "kl_output_clamp": 10.0, "agg": "token-mean", "entropy_coef": 0.01,
}  # fmt: skip

pytestmark = pytest.mark.skipif(not pg_loss.supports(DEVICE), reason="the Triton kernel cannot run here")


def make(rows=3, length=7, h=20, v=53, seed=0, dtype=torch.float64, temperature=0.7, spread=0.1):
    """Hidden states, weight, targets and a ragged batch whose old/ref log-probs are near the truth."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, length, h, generator=g, dtype=torch.float64)
    weight = torch.randn(v, h, generator=g, dtype=torch.float64) / math.sqrt(h) * 3
    targets = torch.randint(0, v, (rows, length), generator=g)
    mask = torch.ones(rows, length, dtype=torch.float64)
    mask[0, length - 2 :] = 0
    mask[-1, 3:] = 0
    with torch.no_grad():
        lp = torch.log_softmax(hidden @ weight.T / temperature, -1).gather(-1, targets[..., None]).squeeze(-1)
    batch = rlsdk.TrainBatch(
        mask=mask,
        advantages=(torch.randn(rows, 1, generator=g, dtype=torch.float64) * mask).contiguous(),
        old_logprobs=lp + spread * torch.randn(rows, length, generator=g, dtype=torch.float64),
        ref_logprobs=lp + spread * torch.randn(rows, length, generator=g, dtype=torch.float64),
        rewards=torch.zeros(rows),
        group_ids=torch.arange(rows) // 2,
        max_length=float(length),
    )
    batch = dataclasses.replace(
        batch, **{f: getattr(batch, f).to(DEVICE) for f in ("mask", "advantages", "old_logprobs", "ref_logprobs")}
    )
    return hidden.to(DEVICE, dtype), weight.to(DEVICE, dtype), targets.to(DEVICE), batch


def reference(hidden, weight, targets, batch, temperature, opts, dtype=torch.float64, grad_scale=1.0):
    """The torch path: logits in ``dtype``, fp32/fp64 log-softmax, clipped_pg; loss, metrics, dX, dW."""
    h = hidden.detach().to(dtype).requires_grad_(True)
    w = weight.detach().to(dtype).requires_grad_(True)
    logits = (h.reshape(-1, h.shape[-1]) @ w.T).to(torch.promote_types(dtype, torch.float32)) / temperature
    log_p = torch.log_softmax(logits, -1)
    lp = log_p.gather(-1, targets.reshape(-1, 1)).squeeze(-1).view(batch.mask.shape)
    ent = -(log_p.exp() * log_p).sum(-1).view(batch.mask.shape)
    loss_fn = rlsdk.create("loss", "clipped_pg", **opts)
    b = dataclasses.replace(batch, entropy=ent if loss_fn.needs_entropy else None)
    out = loss_fn(lp.to(batch.mask.dtype), b)
    (grad_scale * out.loss).backward()
    trained = batch.mask > 0  # the fused op computes the trained tokens only: 0 elsewhere
    lp, ent = (torch.where(trained, t.detach(), torch.zeros((), dtype=t.dtype, device=t.device)) for t in (lp, ent))
    return float(out.loss.detach()), out.metrics, h.grad, w.grad, lp, ent


def fused(hidden, weight, targets, batch, temperature, opts, config=TINY, grad_scale=1.0):
    h = hidden.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    loss, sums, lp, ent = fused_linear_pg_loss(h, w, targets, batch, temperature=temperature, config=config, **opts)
    (grad_scale * loss).backward()
    return float(loss.detach()), sums, h.grad, w.grad, lp, ent


def close(a, b, rtol):
    return float((a - b).abs().max()) <= rtol * max(float(b.abs().max()), 1e-6)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("dual_clip_c", [None, 1.5])
def test_matches_torch_float64(agg, dual_clip_c):
    hidden, weight, targets, batch = make(spread=0.4)
    opts = {**BASE, "agg": agg, "dual_clip_c": dual_clip_c}
    ref_loss, ref_metrics, ref_dx, ref_dw, ref_lp, ref_ent = reference(
        hidden, weight, targets, batch, 0.7, opts, grad_scale=2.0
    )
    loss, sums, dx, dw, lp, ent = fused(hidden, weight, targets, batch, 0.7, opts, grad_scale=2.0)
    assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-14)
    assert close(dx, ref_dx, 1e-11) and close(dw, ref_dw, 1e-11)
    assert close(lp, ref_lp, 1e-12) and close(ent, ref_ent, 1e-12)
    n_tok = float(batch.mask.sum())
    for key, value in ref_metrics.items():
        assert float(sums[key]) / n_tok == pytest.approx(float(value), rel=1e-10, abs=1e-12), key


@pytest.mark.parametrize(
    "changes",
    [
        {"kl_estimator": "k1"}, {"kl_estimator": "k2", "kl_output_clamp": None}, {"kl_estimator": "abs"},
        {"kl_estimator": "k3+"}, {"delta": 1.5, "entropy_coef": 0.0}, {"kl_coef": 0.0, "logratio_clamp": None},
        {"eps_low": 0.05, "eps_high": 0.05, "dual_clip_c": 2.0},
    ],
)  # fmt: skip
def test_every_option_matches(changes):
    hidden, weight, targets, batch = make(seed=3, spread=0.6)
    opts = {**BASE, **changes}
    ref_loss, _, ref_dx, ref_dw, _, _ = reference(hidden, weight, targets, batch, 1.3, opts)
    loss, _, dx, dw, _, _ = fused(hidden, weight, targets, batch, 1.3, opts)
    assert loss == pytest.approx(ref_loss, rel=1e-12, abs=1e-14)
    assert close(dx, ref_dx, 1e-11) and close(dw, ref_dw, 1e-11)


def test_clipping_and_masks_are_exercised():
    """The comparison above is meaningful: clipped tokens exist, masked rows get exactly zero gradient."""
    hidden, weight, targets, batch = make(spread=0.4)
    _, sums, dx, _, _, _ = fused(hidden, weight, targets, batch, 0.7, BASE)
    assert 0 < float(sums["clip_frac"]) < float(sums["tokens"])
    masked = (batch.mask.reshape(-1) == 0).cpu()
    assert masked.any() and (dx.reshape(-1, dx.shape[-1])[masked] == 0).all()


@pytest.mark.parametrize("chunk", [1, 4, 7, 21, 1000])
def test_chunking_does_not_change_the_result(chunk):
    hidden, weight, targets, batch = make(seed=5)
    base = fused(hidden, weight, targets, batch, 1.0, BASE, FusedLossConfig(chunk_tokens=3, block_n=4, block_v=32))
    got = fused(hidden, weight, targets, batch, 1.0, BASE, FusedLossConfig(chunk_tokens=chunk, block_n=1, block_v=16))
    assert got[0] == pytest.approx(base[0], rel=1e-12)
    assert close(got[2], base[2], 1e-12) and close(got[3], base[3], 1e-11)


def test_nan_at_masked_positions_does_not_leak():
    hidden, weight, targets, batch = make(seed=7)
    masked = batch.mask == 0
    poisoned = dataclasses.replace(
        batch,
        old_logprobs=batch.old_logprobs.masked_fill(masked, float("nan")),
        ref_logprobs=batch.ref_logprobs.masked_fill(masked, float("inf")),
        advantages=batch.advantages.masked_fill(masked, float("nan")),
    )
    # NaN hidden states too: untrained tokens never reach the GEMMs (not even as 0 * NaN in dW)
    dirty_hidden = hidden.masked_fill(masked[..., None], float("nan"))
    clean = fused(hidden, weight, targets, batch, 1.0, BASE)
    dirty = fused(dirty_hidden, weight, targets, poisoned, 1.0, BASE)
    assert dirty[0] == clean[0]
    assert torch.equal(dirty[3], clean[3])
    assert torch.equal(dirty[2][~masked], clean[2][~masked]) and bool((dirty[2][masked] == 0).all())


def test_poisoned_buffers_are_fully_written(monkeypatch):
    monkeypatch.setenv("RLSDK_KERNELS_POISON", "1")
    hidden, weight, targets, batch = make(rows=4, length=9, v=37, seed=11)
    loss, sums, dx, dw, lp, ent = fused(
        hidden, weight, targets, batch, 1.0, BASE, FusedLossConfig(chunk_tokens=7, block_n=4, block_v=16)
    )
    for t in (dx, dw, lp, ent, *sums.values()):
        assert torch.isfinite(t).all()
    assert math.isfinite(loss)


def test_grad_only_where_asked_and_forward_only(monkeypatch):
    from rlsdk_kernels import linear_pg_loss

    hidden, weight, targets, batch = make(seed=2)
    full = fused(hidden, weight, targets, batch, 1.0, BASE)
    w = weight.clone().requires_grad_(True)
    loss, _, _, _ = fused_linear_pg_loss(hidden, w, targets, batch, temperature=1.0, config=TINY, **BASE)
    loss.backward()
    assert torch.equal(w.grad, full[3])
    gemms = []
    add_chunk_grads = linear_pg_loss.add_chunk_grads
    monkeypatch.setattr(linear_pg_loss, "add_chunk_grads", lambda *a: gemms.append(1) or add_chunk_grads(*a))
    with torch.no_grad():
        value, sums, _, _ = fused_linear_pg_loss(hidden, w, targets, batch, temperature=1.0, config=TINY, **BASE)
    assert float(value) == full[0] and float(sums["tokens"]) == float(batch.mask.sum())
    assert not gemms  # no gradient pass under no_grad, although w requires grad


def test_gradients_match_finite_differences_float64():
    """Directional derivatives along random directions equal central differences (gradcheck's idea;
    gradcheck itself reruns the backward on one graph, which this op refuses by design)."""
    hidden, weight, targets, batch = make(rows=2, length=4, h=5, v=19, seed=4)
    opts = {**BASE, "kl_estimator": "k2", "kl_output_clamp": None, "entropy_coef": 0.1}

    def f(h, w):
        return fused_linear_pg_loss(h, w, targets, batch, temperature=0.9, config=TINY, **opts)[0]

    h = hidden.detach().clone().requires_grad_(True)
    w = weight.detach().clone().requires_grad_(True)
    f(h, w).backward()
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        u = torch.randn(hidden.shape, generator=g, dtype=torch.float64).to(DEVICE)
        v = torch.randn(weight.shape, generator=g, dtype=torch.float64).to(DEVICE)
        eps = 1e-6
        with torch.no_grad():
            numeric = (f(hidden + eps * u, weight + eps * v) - f(hidden - eps * u, weight - eps * v)) / (2 * eps)
        analytic = (h.grad * u).sum() + (w.grad * v).sum()
        assert float(numeric) == pytest.approx(float(analytic), rel=1e-6, abs=1e-9)


def test_backward_twice_is_a_clear_error():
    hidden, weight, targets, batch = make()
    h = hidden.clone().requires_grad_(True)
    loss = fused_linear_pg_loss(h, weight, targets, batch, config=TINY, **BASE)[0]
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward ran twice"):
        loss.backward()


@pytest.mark.parametrize("grad_accum", ["weight", "float32"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_no_worse_than_torch_same_dtype(dtype, grad_accum):
    """|fused - fp64 truth| <= |same-dtype torch - fp64 truth| + tol, for the loss and both gradients."""
    hidden, weight, targets, batch = make(rows=4, length=16, h=32, v=203, seed=9, dtype=torch.float64, spread=0.3)
    truth = reference(hidden, weight, targets, batch, 1.0, BASE)
    low_h, low_w = hidden.to(dtype), weight.to(dtype)
    torch_low = reference(low_h, low_w, targets, batch, 1.0, BASE, dtype=dtype)
    config = FusedLossConfig(chunk_tokens=9, block_n=4, block_v=64, grad_accum=grad_accum)
    ours = fused(low_h, low_w, targets, batch, 1.0, BASE, config)
    assert ours[2].dtype == dtype and ours[3].dtype == dtype
    assert abs(ours[0] - truth[0]) <= abs(torch_low[0] - truth[0]) + 2e-3
    for i, tol in ((2, 2e-3), (3, 2e-3)):
        err = float((ours[i].double() - truth[i]).abs().max())
        torch_err = float((torch_low[i].double() - truth[i]).abs().max())
        assert err <= torch_err + tol * float(truth[i].abs().max()), (i, err, torch_err)


@settings(max_examples=12, deadline=None)
@given(
    rows=st.integers(1, 4), length=st.integers(1, 9), h=st.integers(1, 24), v=st.integers(2, 90),
    chunk=st.integers(1, 40), block_n=st.sampled_from([1, 2, 8]), block_v=st.sampled_from([16, 64]),
    temperature=st.floats(0.3, 2.0), agg=st.sampled_from(["token-mean", "seq-mean-token-mean",
    "seq-mean-token-sum", "seq-mean-token-sum-norm"]), estimator=st.sampled_from(["k1", "k2", "k3", "abs", "k3+"]),
    dual=st.sampled_from([None, 2.0]), entropy_coef=st.sampled_from([0.0, 0.05]), seed=st.integers(0, 99),
)  # fmt: skip
def test_property_any_shape_and_options_match_torch(
    rows, length, h, v, chunk, block_n, block_v, temperature, agg, estimator, dual, entropy_coef, seed
):
    """For any shape, chunking, tiling and options: loss and gradients equal the float64 torch path."""
    hidden, weight, targets, batch = make(rows, length, h, v, seed=seed, temperature=temperature, spread=0.5)
    opts = {**BASE, "agg": agg, "kl_estimator": estimator, "dual_clip_c": dual, "entropy_coef": entropy_coef}
    config = FusedLossConfig(chunk_tokens=chunk, block_n=block_n, block_v=block_v)
    ref_loss, _, ref_dx, ref_dw, ref_lp, _ = reference(hidden, weight, targets, batch, temperature, opts)
    loss, _, dx, dw, lp, _ = fused(hidden, weight, targets, batch, temperature, opts, config)
    assert loss == pytest.approx(ref_loss, rel=1e-10, abs=1e-12)
    assert close(lp, ref_lp, 1e-10) and close(dx, ref_dx, 1e-9) and close(dw, ref_dw, 1e-9)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 100_000), vocab=st.integers(1, 300_000), mib=st.floats(0.01, 4096),
    dtype=st.sampled_from([torch.bfloat16, torch.float32]),
)  # fmt: skip
def test_chunk_size_fits_the_budget(n, vocab, mib, dtype):
    config = FusedLossConfig(chunk_mib=mib)
    chunk = chunk_size(n, vocab, dtype, config)
    per_token = vocab * torch.empty((), dtype=dtype).element_size()
    assert 1 <= chunk <= n
    assert chunk == 1 or chunk * per_token <= mib * 2**20
    if chunk >= 128 and chunk < n:
        assert chunk % 128 == 0
    assert chunk_size(n, vocab, dtype, FusedLossConfig(chunk_tokens=7)) == min(7, n)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"grad_accum": "fp8"}, "FusedLossConfig.grad_accum must be one of 'weight', 'float32', got 'fp8'"),
        ({"chunk_tokens": 0}, "FusedLossConfig.chunk_tokens must be None (from chunk_mib) or an integer >= 1, got 0"),
        ({"chunk_mib": -1}, "FusedLossConfig.chunk_mib must be a finite number > 0, got -1"),
        ({"block_v": 8}, "FusedLossConfig.block_v must be a power of two >= 16, got 8"),
    ],
)
def test_bad_kernel_options_are_config_errors(options, needle):
    with pytest.raises(ConfigError) as info:
        FusedLossConfig(**options)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"grad_accum": "fp8"}, "logprob.grad_accum must be one of 'weight', 'float32', got 'fp8'"),
        ({"fuse_loss_tokens": 0}, "logprob.fuse_loss_tokens must be None (from fuse_loss_mib) or an integer >= 1"),
        ({"fuse_loss_mib": -1}, "logprob.fuse_loss_mib must be a finite number > 0, got -1"),
    ],
)
def test_chunk_options_are_the_backends(options, needle):
    """The chunk options of the fused kernel are options of the ``triton`` backend, not of the loss."""
    with pytest.raises(ConfigError) as info:
        rlsdk.create("logprob_backend", "triton", **options)
    assert needle in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown option 'chunk_tokens'"):  # the loss has no kernel option
        rlsdk.create("loss", "fused_clipped_pg", chunk_tokens=3)
    backend = rlsdk.create("logprob_backend", "triton", fuse_loss_tokens=5, fuse_loss_mib=12.0, grad_accum="float32")
    for config in (backend.pg_cuda_config, backend.pg_cpu_config):
        assert (config.chunk_tokens, config.chunk_mib, config.grad_accum) == (5, 12.0, "float32")
    assert (backend.pg_cpu_config.block_n, backend.pg_cpu_config.block_v) == (8, 64)  # the interpreter's tiles


def test_empty_batch_gives_zero_loss_and_gradients():
    hidden, weight, targets, batch = make(rows=2)
    empty = dataclasses.replace(
        batch,
        **{f: getattr(batch, f)[:0] for f in ("mask", "advantages", "old_logprobs", "ref_logprobs")},
        rewards=batch.rewards[:0],
        group_ids=batch.group_ids[:0],
    )
    w = weight.clone().requires_grad_(True)
    loss, sums, lp, ent = fused_linear_pg_loss(hidden[:0], w, targets[:0], empty, config=TINY, **BASE)
    loss.backward()
    assert float(loss.detach()) == 0.0 and bool((w.grad == 0).all()) and lp.shape == ent.shape == (0, 7)
    assert set(sums) == set(fused_linear_pg_loss(hidden, weight, targets, batch, config=TINY, **BASE)[1])


def test_bad_shapes_are_refused():
    hidden, weight, targets, batch = make()
    with pytest.raises(ValueError, match="one row per token of mask"):
        fused_linear_pg_loss(hidden[:, :-1], weight, targets, batch, **BASE)
    with pytest.raises(ValueError, match="target ids must lie in"):
        fused_linear_pg_loss(hidden, weight, targets + 1000, batch, **BASE)


def _backend(name):
    return rlsdk.create("logprob_backend", name)


@pytest.mark.parametrize("entropy_coef", [0.0, 0.02])
def test_loss_from_hidden_equals_backend_then_clipped_pg(entropy_coef, monkeypatch):
    """The ``triton`` backend's strategy for ``fused_clipped_pg`` (the fused linear PG kernel) gives the
    loss, metrics and gradients of the ``torch`` backend followed by ``clipped_pg``."""
    from rlsdk_kernels import linear_pg_loss

    calls = []
    compute = linear_pg_loss._compute
    monkeypatch.setattr(linear_pg_loss, "_compute", lambda *a, **k: calls.append(1) or compute(*a, **k))
    hidden, weight, targets, batch = make(seed=13, spread=0.3)
    batch = dataclasses.replace(
        batch, **{f: getattr(batch, f).float() for f in ("mask", "advantages", "old_logprobs", "ref_logprobs")}
    )
    hidden, weight = hidden.float(), weight.float()
    opts = {k: v for k, v in BASE.items()}
    opts["entropy_coef"] = entropy_coef
    loss_fn = FusedClippedPG(**opts)
    backend = rlsdk.create("logprob_backend", "triton", fuse_loss_tokens=4)
    assert backend.strategy(loss_fn) is kernels_plugin.LOSS_STRATEGIES[FusedClippedPG]
    results = []
    for path in ("fused", "unfused"):
        h = hidden.reshape(-1, hidden.shape[-1]).clone().requires_grad_(True)
        w = weight.clone().requires_grad_(True)
        if path == "fused":
            fused = backend.loss_from_hidden(h, w, targets.reshape(-1), batch, loss_fn, temperature=0.8)
            assert isinstance(fused, rlsdk.HiddenLossOutput) and fused.logprobs.shape == batch.mask.shape
            out = fused.output
        else:
            o = _backend("torch")(h, w, targets.reshape(-1), temperature=0.8, with_entropy=True)
            b = dataclasses.replace(batch, entropy=o.entropy.view(batch.mask.shape) if entropy_coef else None)
            out = rlsdk.create("loss", "clipped_pg", **opts)(o.logprobs.view(batch.mask.shape), b)
        out.loss.backward()
        results.append((float(out.loss.detach()), out.metrics, h.grad, w.grad))
    (fl, fm, fx, fw), (ul, um, ux, uw) = results
    assert fl == pytest.approx(ul, rel=1e-5, abs=1e-7)
    assert list(fm) == list(um) and ("entropy" in fm) == bool(entropy_coef)
    for key in um:
        assert float(fm[key]) == pytest.approx(float(um[key]), rel=1e-5, abs=1e-6), key
    assert close(fx, ux, 1e-4) and close(fw, uw, 1e-4)
    assert calls == [1]  # one micro-batch through the fused linear PG kernel


def test_loss_from_hidden_matches_the_op_bit_for_bit():
    """The strategy is :func:`fused_linear_pg_loss` with the backend's chunk options, nothing more."""
    hidden, weight, targets, batch = make(seed=3)
    loss_fn = FusedClippedPG(**BASE)
    backend = rlsdk.create("logprob_backend", "triton", fuse_loss_tokens=5, grad_accum="float32")
    config = backend.pg_cuda_config if DEVICE == "cuda" else backend.pg_cpu_config
    results = []
    for path in ("backend", "op"):
        h, w = hidden.reshape(-1, 20).clone().requires_grad_(True), weight.clone().requires_grad_(True)
        if path == "backend":
            out = backend.loss_from_hidden(h, w, targets.reshape(-1), batch, loss_fn, temperature=0.7)
            value, lp = out.output.loss, out.logprobs
        else:
            value, _, lp, _ = fused_linear_pg_loss(h, w, targets, batch, temperature=0.7, config=config, **BASE)
        value.backward()
        results.append((value.detach(), lp, h.grad, w.grad))
    for got, want in zip(*results, strict=True):
        assert torch.equal(got, want)


def test_other_losses_and_subclasses_take_the_any_loss_strategy():
    class Custom(FusedClippedPG):
        pass

    backend = rlsdk.create("logprob_backend", "triton")
    for loss in (rlsdk.create("loss", "clipped_pg"), rlsdk.create("loss", "reinforce"), Custom()):
        assert backend.strategy(loss) is kernels_plugin.ANY_LOSS


@pytest.mark.skipif(DEVICE != "cpu", reason="the fallback is for the CPU without the interpreter")
def test_loss_from_hidden_declines_without_the_interpreter(monkeypatch):
    """Where the kernels cannot run the backend declines (None): the trainer then runs the backend
    and the loss (which falls back to ``clipped_pg``)."""
    hidden, weight, targets, batch = make(seed=1)
    backend = rlsdk.create("logprob_backend", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    loss_fn = FusedClippedPG(**BASE)
    assert backend.loss_from_hidden(hidden.reshape(-1, 20), weight, targets.reshape(-1), batch, loss_fn) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU run is the interpreter check")
def test_training_with_the_fused_loss_matches_clipped_pg(same_training, monkeypatch):
    """Two steps, two micro-batches: the same metrics as ``clipped_pg`` after the ``torch`` backend.

    The learning rate is small because AdamW's first step moves every parameter by about ``lr``
    whatever the size of its gradient, so rounding-level gradient differences would otherwise
    become visible in the second step's metrics.
    """
    from rlsdk_kernels import linear_pg_loss

    calls = []
    compute = linear_pg_loss._compute
    monkeypatch.setattr(linear_pg_loss, "_compute", lambda *a, **k: calls.append(1) or compute(*a, **k))
    common = ["train.micro_batches=2", "train.lr=1e-5", "loss.entropy_coef=0.03", "loss.kl_coef=0.01"]
    variants = {"clipped_pg": [*common, "loss.name=clipped_pg"]}
    variants["fused_clipped_pg"] = [*common, "loss.name=fused_clipped_pg", "logprob.backend=triton"]
    rows, compared = same_training(variants)
    assert compared > 10 and "loss/entropy" in rows["fused_clipped_pg"][0]
    assert len(calls) == 4  # 2 steps x 2 micro-batches went through the fused op


def test_runs_eagerly_inside_torch_compile(same_under_compile):
    """A compiled step around :func:`fused_linear_pg_loss` (a ``torch.compiler.disable`` region, so a
    graph break) gives the eager values and gradients."""
    hidden, weight, targets, batch = make()

    def step(x, w):
        loss, _, _, _ = fused_linear_pg_loss(torch.tanh(x), w, targets, batch, temperature=0.7, config=TINY, **BASE)
        return 3 * loss

    same_under_compile(step, hidden, weight)
