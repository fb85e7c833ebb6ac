"""Shared test set-up: keep cookiecutter's user files (replay, cache) out of the home directory."""

from __future__ import annotations

import pytest

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
