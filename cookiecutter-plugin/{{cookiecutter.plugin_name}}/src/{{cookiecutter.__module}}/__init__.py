"""{{ cookiecutter.plugin_name }}: an rlsdk plugin.

Components (registered by :mod:`{{ cookiecutter.__module }}.plugin`, the module named by the
``rlsdk`` entry point in pyproject.toml; each module's ``NAME`` is the name it is registered under):
{% if cookiecutter.include_loss %}
- a loss (:mod:`{{ cookiecutter.__module }}.loss`)
{%- endif %}
{%- if cookiecutter.include_advantage %}
- an advantage estimator (:mod:`{{ cookiecutter.__module }}.advantage`)
{%- endif %}
{%- if cookiecutter.include_sampler %}
- a sampler (:mod:`{{ cookiecutter.__module }}.sampler`)
{%- endif %}
{%- if cookiecutter.include_reward %}
- a reward (:mod:`{{ cookiecutter.__module }}.reward`)
{%- endif %}
- the algorithm preset ``{{ cookiecutter.__prefix }}`` that uses them (:mod:`{{ cookiecutter.__module }}.plugin`)
"""

__version__ = "0.1.0"
