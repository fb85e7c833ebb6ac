"""The kernels check triton's version before they run (``MIN_TRITON``), without importing triton.

These run everywhere, triton or not: the version is faked. CI's lower-bound set (torch 2.4, which
pins triton 3.0) runs the real case: every kernel test skips there with the message checked here.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
import torch

import rlsdk
from rlsdk_kernels import pg_loss
from rlsdk_kernels.linear_logprob import MIN_TRITON, triton_available, triton_problem
from rlsdk_kernels.plugin import TritonLogprobBackend


@pytest.fixture
def fake_triton(monkeypatch):
    """``fake_triton(version)``: triton looks installed at ``version`` (None: without metadata)."""
    real_version, real_find_spec = importlib.metadata.version, importlib.util.find_spec

    def install(version: str | None, found: bool = True) -> None:
        def version_of(name: str) -> str:
            if name != "triton":
                return real_version(name)
            if version is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return version

        monkeypatch.setattr(importlib.metadata, "version", version_of)
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: (object() if found else None) if name == "triton" else real_find_spec(name, *a),
        )

    return install


@pytest.mark.parametrize(
    "version,ok",
    [("3.0.0", False), ("3.4.0", False), ("3.5.0", True), ("3.6.0", True), ("3.10.1", True), ("4.0.0+git1", True)],
)
def test_versions_are_compared_as_numbers(fake_triton, version, ok):
    fake_triton(version)
    assert triton_available() is ok
    if not ok:
        oldest = ".".join(map(str, MIN_TRITON))
        assert triton_problem() == (
            f"triton {version} is installed, older than {oldest}, "
            "the oldest these kernels run with (torch >= 2.9 brings one)"
        )


def test_missing_triton_and_missing_metadata(fake_triton):
    fake_triton("3.6.0", found=False)
    assert triton_problem() == "triton is not installed"
    fake_triton(None)  # importable but without metadata (a source build): nothing to check
    assert triton_problem() is None


def test_an_old_triton_is_named_and_auto_does_not_pick_it(fake_triton, monkeypatch):
    from rlsdk.trainer import select_backend

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    fake_triton("3.0.0")
    backend = TritonLogprobBackend()
    assert not backend.supports("cpu") and not backend.supports("cuda")
    with pytest.raises(RuntimeError, match=r"triton 3\.0\.0 is installed, older than 3\.5.*use logprob.backend=torch"):
        backend(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))
    registry = rlsdk.testing.make_registry()
    assert not isinstance(select_backend(registry, {}, torch.device("cpu")), TritonLogprobBackend)
    loss = registry.create("loss", "fused_clipped_pg", {})
    assert not pg_loss.supports("cpu")  # fused_clipped_pg then computes as clipped_pg
    x, w, y = torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, dtype=torch.long)
    assert backend.loss_from_hidden(x, w, y, None, loss) is None  # no fused path: the trainer runs backend, loss
