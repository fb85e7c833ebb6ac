"""The plugin is installed, found through its entry point, and its config trains with it.

These tests need the package installed (``pip install -e .``): they check what rlsdk discovers, not
what this directory contains.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from rlsdk.config import load_config
from rlsdk.plugins import PluginInfo, get_registry

from {{ cookiecutter.__module }} import {{ [('advantage' if cookiecutter.include_advantage else ''), ('loss' if cookiecutter.include_loss else ''), 'plugin', ('reward' if cookiecutter.include_reward else ''), ('sampler' if cookiecutter.include_sampler else '')] | select | join(', ') }}

DISTRIBUTION = "{{ cookiecutter.plugin_name }}"
#: kind -> the names this plugin registers (each module's NAME, and the preset)
COMPONENTS = {
{%- if cookiecutter.include_loss %}
    "loss": [loss.NAME],
{%- endif %}
{%- if cookiecutter.include_advantage %}
    "advantage": [advantage.NAME],
{%- endif %}
{%- if cookiecutter.include_sampler %}
    "sampler": [sampler.NAME],
{%- endif %}
{%- if cookiecutter.include_reward %}
    "reward": [reward.NAME],
{%- endif %}
    "algorithm": [plugin.PRESET],
}
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train.yaml"


def _normalise(name: str | None) -> str:
    return re.sub(r"[-_.]+", "-", name or "").lower()


def _ours(plugins: list[PluginInfo]) -> list[PluginInfo]:
    return [p for p in plugins if _normalise(p.distribution) == _normalise(DISTRIBUTION)]


def test_discovered_through_its_entry_point():
    registry = get_registry(refresh=True)
    ours = _ours(registry.plugins)
    assert ours, f"{DISTRIBUTION} is not among the installed rlsdk plugins; run `pip install -e .`"
    assert [p.error for p in ours] == [None] * len(ours)
    registers: dict[str, list[str]] = {}
    for info in ours:
        for kind, names in info.registers.items():
            registers.setdefault(kind, []).extend(names)
    assert registers == COMPONENTS
    for kind, names in COMPONENTS.items():
        for name in names:
            assert _normalise(registry.owner(kind, name).split(":")[0]) == _normalise(DISTRIBUTION)


def test_listed_by_rlsdk_plugins_json():
    proc = subprocess.run(
        [sys.executable, "-m", "rlsdk.cli", "plugins", "--json"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    rows = [row for row in json.loads(proc.stdout) if _normalise(row["distribution"]) == _normalise(DISTRIBUTION)]
    assert rows, f"`rlsdk plugins --json` does not list {DISTRIBUTION}"
    assert {kind: names for row in rows for kind, names in row["registers"].items()} == COMPONENTS


def test_training_config_uses_the_plugin():
    config = load_config(get_registry(), CONFIG)
    assert config["algorithm"] == plugin.PRESET
    for section in ("loss", "advantage", "sampler"):
        if section in COMPONENTS:
            assert config[section]["name"] in COMPONENTS[section]
    for name in COMPONENTS.get("reward", []):
        assert config["rewards"][name]["weight"] > 0
