"""Shared test set-up: the Triton interpreter without a GPU, and cookiecutter's user files (replay,
cache) kept out of the home directory."""

from __future__ import annotations

import os

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
