"""The plugin rlsdk loads: pyproject.toml's ``[project.entry-points.rlsdk]`` names this module.

pluggy registers this module and calls the hook implementations it finds in it. Each component's
hook lives next to it and is imported here, so adding a component means writing its module and
adding one import below; the entry point stays the same (no reinstall needed with ``pip install -e .``).

This module also registers the algorithm preset :data:`PRESET`: rlsdk's GRPO with this plugin's
components in place of rlsdk's. ``configs/train.yaml`` selects it
(``algorithm: {{ cookiecutter.__prefix }}``), so each component's name is written once, as ``NAME`` in its module.
"""

from __future__ import annotations

from typing import Any

import rlsdk
from rlsdk.hookspecs import Register

from {{ cookiecutter.__module }} import {{ [('advantage' if cookiecutter.include_advantage else ''), ('loss' if cookiecutter.include_loss else ''), ('reward' if cookiecutter.include_reward else ''), ('sampler' if cookiecutter.include_sampler else '')] | select | join(', ') }}
{%- if cookiecutter.include_advantage %}
from {{ cookiecutter.__module }}.advantage import register_advantages
{%- endif %}
{%- if cookiecutter.include_loss %}
from {{ cookiecutter.__module }}.loss import register_losses
{%- endif %}
{%- if cookiecutter.include_reward %}
from {{ cookiecutter.__module }}.reward import register_rewards
{%- endif %}
{%- if cookiecutter.include_sampler %}
from {{ cookiecutter.__module }}.sampler import register_samplers
{%- endif %}

__all__ = [
    "PRESET",
    "preset",
    "register_algorithms",
{%- if cookiecutter.include_advantage %}
    "register_advantages",
{%- endif %}
{%- if cookiecutter.include_loss %}
    "register_losses",
{%- endif %}
{%- if cookiecutter.include_reward %}
    "register_rewards",
{%- endif %}
{%- if cookiecutter.include_sampler %}
    "register_samplers",
{%- endif %}
]

#: The name of this plugin's algorithm preset (config ``algorithm``).
PRESET = "{{ cookiecutter.__prefix }}"


def preset() -> dict[str, Any]:
    """The config sections of :data:`PRESET`: rlsdk's ``grpo`` preset with this plugin's components.

    Built on ``rlsdk.create("algorithm", "grpo")``, so an experiment's ``algorithm=grpo`` arm differs
    from this preset in this plugin's components only. Every option of a component set here is
    stated; ``rlsdk train --print-config algorithm={{ cookiecutter.__prefix }}`` shows each value
    and where it came from.
    """
    sections = rlsdk.create("algorithm", "grpo")
{%- if cookiecutter.include_sampler %}
    # max_new_tokens 4: the reverse task's 3 digits plus the end-of-sequence token
    sections["sampler"] = {"name": sampler.NAME, "n": 16, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4}
{%- endif %}
{%- if cookiecutter.include_advantage %}
    sections["advantage"] = {"name": advantage.NAME}
{%- endif %}
{%- if cookiecutter.include_loss %}
    sections["loss"] = {"name": loss.NAME, "scale": 1.0, "agg": "seq-mean-token-mean"}
{%- endif %}
{%- if cookiecutter.include_reward %}
    sections["rewards"] = {
        "char_match": {"weight": 1.0},  # the answer check
        reward.NAME: {"weight": 0.2},  # this plugin's shaping reward
    }
{%- endif %}
    return sections


@rlsdk.hookimpl
def register_algorithms(register: Register) -> None:
    """Register this plugin's preset (kind ``algorithm``)."""
    register(PRESET, preset)
