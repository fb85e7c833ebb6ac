"""Shared test set-up: the Triton interpreter without a GPU, and cookiecutter's user files (replay,
cache) kept out of the home directory."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

# Without a GPU the Triton kernels run under the interpreter. The mode is fixed when triton is first
# imported, so it is set here, before any test module can import it (the kernel test modules also
# set it, for running them alone).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from rlsdk.scaffold import TEMPLATE_ENV


@pytest.fixture(scope="session", autouse=True)
def cookiecutter_home(tmp_path_factory):
    """Point cookiecutter's user config at a temporary one, so its replay files stay out of ~."""
    home = tmp_path_factory.mktemp("cookiecutter")
    config = home / "config.yaml"
    config.write_text(f"replay_dir: {home / 'replay'}\ncookiecutters_dir: {home / 'cookiecutters'}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COOKIECUTTER_CONFIG", str(config))
        mp.delenv(TEMPLATE_ENV, raising=False)
        yield home


#: Two steps of a tiny policy: enough for the update to change the second step's metrics.
TINY_RUN = [
    "train.steps=2", "train.prompts_per_step=2", "sampler.n=2", "policy.d_model=16", "policy.n_layers=1",
    "policy.n_heads=2", "run.plot=false", "run.progress=false",
]  # fmt: skip


@pytest.fixture
def same_training(tmp_path):
    """``run(variants, registry=None) -> (rows, compared)``: trains each variant (a label and its
    config overrides, on top of :data:`TINY_RUN`) and asserts that every numeric metric of every step,
    timings aside, equals the first variant's to rel 1e-4, abs 1e-5. ``rows`` maps each label to its
    ``metrics.jsonl`` rows; ``compared`` counts the metrics compared."""
    from rlsdk.config import load_config
    from rlsdk.plugins import get_registry
    from rlsdk.trainer import train

    def run(variants: dict[str, list[str]], registry=None):
        reg = registry or get_registry(refresh=True)
        rows = {}
        for label, overrides in variants.items():
            train(load_config(reg, overrides=[*TINY_RUN, *overrides]), reg, run_dir=tmp_path / label)
            rows[label] = [json.loads(line) for line in (tmp_path / label / "metrics.jsonl").read_text().splitlines()]
        first, *others = rows.values()
        compared = 0
        for other in others:
            for a, b in zip(first, other, strict=True):
                for key, value in a.items():
                    if key in {"wall_time", "tokens_per_s", "step_time"} or key.startswith("time"):
                        continue
                    if isinstance(value, (int, float)):
                        assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
                        compared += 1
        return rows, compared

    return run


@pytest.fixture
def same_under_compile():
    """``check(step, *leaves)``: ``step(*leaves)`` returns a scalar; it is run eagerly and under
    ``torch.compile`` (the ``aot_eager`` backend: dynamo and AOTAutograd, no code generation), and the
    values and the gradients of every leaf must agree to 1e-12 (float64 leaves)."""

    def check(step, *leaves):
        results = []
        for fn in (step, torch.compile(step, backend="aot_eager")):
            copies = [leaf.detach().clone().requires_grad_(True) for leaf in leaves]
            with warnings.catch_warnings():
                # dynamo reads .grad of the non-leaf tensors it passes to the disabled region
                warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf", UserWarning)
                value = fn(*copies)
            value.backward()
            results.append((value.detach(), [c.grad for c in copies]))
        (eager, eager_grads), (compiled, compiled_grads) = results
        torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=1e-12)
        for got, want in zip(compiled_grads, eager_grads, strict=True):
            assert want is not None and bool(want.abs().sum() > 0)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    return check
