"""Start-up imports no heavy dependency before it is needed (issue 13; times: benchmarks/startup.py).

Every rlsdk command loads every plugin, so a plugin module must import cheaply: its heavy
dependencies (triton, transformers, ``torch._dynamo`` through ``torch.compiler.disable``) come in
when a component is built or an op first runs. Each check runs in a fresh interpreter, since this
test session has imported most of them already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from rlsdk_kernels.linear_logprob import triton_problem  # reads metadata, imports no triton

#: Modules none of the checked start-ups may import (sympy, mpmath come with ``torch._dynamo``).
HEAVY = ("torch._dynamo", "triton", "sympy", "matplotlib", "transformers", "scipy", "optuna", "pandas", "rich")
#: PyTorch's optimizers import ``torch._dynamo`` (and with it sympy, triton) when they are built:
#: ``Optimizer.add_param_group`` is wrapped in ``torch._disable_dynamo``. A training run pays that.
BY_TORCH_OPTIM = ("torch._dynamo", "triton", "sympy")


def loaded_after(code: str, tmp_path) -> list[str]:
    """The modules of :data:`HEAVY` that are in ``sys.modules`` after ``code`` runs in a fresh process."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json, sys
        print("\\nHEAVY=" + json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
    """)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.rsplit("HEAVY=", 1)[1])


def test_plugins_command_imports_nothing_heavy(tmp_path):
    """``rlsdk plugins --json`` loads every plugin and lists what it registers."""
    code = """
        import contextlib, io
        from rlsdk.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            assert main(["plugins", "--json"]) in (0, None)
        assert "fused_clipped_pg" in out.getvalue() and "triton" in out.getvalue()
    """
    assert loaded_after(code, tmp_path) == []


def test_plugin_modules_and_factory_signatures_import_nothing_heavy(tmp_path):
    """Every module of the bundled plugins imports cheaply, and reading every factory's signature (as
    option checking, ``tools/gen_components.py`` and the docs do) imports nothing either."""
    code = """
        import importlib, inspect, pkgutil
        import rlsdk_kernels, rlsdk_plugins
        from rlsdk.plugins import KINDS, get_registry
        for package in (rlsdk_plugins, rlsdk_kernels):
            for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
                importlib.import_module(module.name)
        registry = get_registry()
        for kind in KINDS:
            for name in registry.names(kind):
                inspect.signature(registry.factory(kind, name))
    """
    assert loaded_after(code, tmp_path) == []


def test_train_imports_only_what_torch_optim_brings(tmp_path):
    """A short default run (no plot, no progress bar) imports no plotting, Hugging Face or research
    library; ``torch._dynamo`` comes from the optimizer alone (:data:`BY_TORCH_OPTIM`)."""
    code = f"""
        from rlsdk.cli import main
        main(["train", "train.steps=1", "run.plot=false", "--no-progress", "--run-dir", {str(tmp_path / "run")!r}])
    """
    assert [m for m in loaded_after(code, tmp_path) if m not in BY_TORCH_OPTIM] == []


@pytest.mark.skipif(triton_problem() is not None, reason=f"needs a triton that runs the kernels: {triton_problem()}")
def test_lazily_disabled_op_is_a_graph_break_when_its_first_call_is_compiled(tmp_path):
    """``rlsdk_kernels._compile.disable`` builds ``torch.compiler.disable`` on the first call. The
    kernel tests call each op eagerly before compiling a step around it; here, in a fresh process, the
    first call ever is inside ``torch.compile`` and still gives the eager values and gradients."""
    code = """
        import warnings
        import torch
        from rlsdk_kernels.linear_logprob import CPU_TILES, KernelConfig, fused_linear_logprobs

        torch.manual_seed(0)
        x, w = torch.randn(37, 24, dtype=torch.float64), torch.randn(123, 24, dtype=torch.float64)
        y = torch.randint(0, 123, (37,))

        def step(x, w):
            lp, ent = fused_linear_logprobs(torch.tanh(x), w, y, 0.7, True, config=KernelConfig(**CPU_TILES))
            return (lp * 2 + ent).sum()

        results = []
        for fn in (torch.compile(step, backend="aot_eager"), step):  # compiled first
            leaves = [t.clone().requires_grad_(True) for t in (x, w)]
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "The .grad attribute of a Tensor that is not a leaf", UserWarning)
                value = fn(*leaves)
            value.backward()
            results.append([value.detach(), *(t.grad for t in leaves)])
        for got, want in zip(*results, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    """
    interpreted = "import os\nos.environ['TRITON_INTERPRET'] = '1'\n" + textwrap.dedent(code)
    assert "torch._dynamo" in loaded_after(interpreted, tmp_path)  # the step was compiled
