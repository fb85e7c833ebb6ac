"""{{ cookiecutter.plugin_name }}: an rlsdk plugin.

Components (registered by :mod:`{{ cookiecutter.__module }}.plugin`, the module named by the
``rlsdk`` entry point in pyproject.toml):
{% if cookiecutter.include_loss %}
- loss ``{{ cookiecutter.__loss_name }}`` (:mod:`{{ cookiecutter.__module }}.loss`)
{%- endif %}
{%- if cookiecutter.include_advantage %}
- advantage ``{{ cookiecutter.__advantage_name }}`` (:mod:`{{ cookiecutter.__module }}.advantage`)
{%- endif %}
{%- if cookiecutter.include_sampler %}
- sampler ``{{ cookiecutter.__sampler_name }}`` (:mod:`{{ cookiecutter.__module }}.sampler`)
{%- endif %}
{%- if cookiecutter.include_reward %}
- reward ``{{ cookiecutter.__reward_name }}`` (:mod:`{{ cookiecutter.__module }}.reward`)
{%- endif %}
"""

__version__ = "0.1.0"
