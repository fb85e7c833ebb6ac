"""The plugin rlsdk loads: pyproject.toml's ``[project.entry-points.rlsdk]`` names this module.

pluggy registers this module and calls the hook implementations it finds in it. Each one lives next
to its component and is imported here, so adding a component means writing its module and adding
one import below; the entry point stays the same (no reinstall needed with ``pip install -e .``).
"""
{% if cookiecutter.include_advantage %}
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
