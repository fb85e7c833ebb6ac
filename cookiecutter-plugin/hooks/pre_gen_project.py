"""Check the answers before cookiecutter writes the project; exit 1 with a message if one is bad.

Checked here, with the standard library only (so the template also works from a plain
``cookiecutter`` install):

- ``plugin_name`` is a valid distribution name (PEP 508: letters, digits, '-', '_', '.', starting
  and ending with a letter or digit);
- the module name derived from it is a Python identifier, not a keyword, and not one of rlsdk's own
  packages;
- at least one component kind is chosen.

When rlsdk is importable and ``rlsdk new-plugin`` has not already done so, the checks against the
installed environment run too (:func:`rlsdk.scaffold.check_installed`): no installed distribution
has this name, no importable module has the module name, and no installed plugin registers the
component names or the preset name the project would create. cookiecutter removes the half-made
project directory when this hook fails.
"""

import keyword
import re
import sys

PLUGIN_NAME = {{ cookiecutter.plugin_name | tojson }}
MODULE = {{ cookiecutter.__module | tojson }}
ALREADY_CHECKED = {{ 'True' if cookiecutter._rlsdk_checked else 'False' }}
CHOSEN = {
    "loss": {{ 'True' if cookiecutter.include_loss else 'False' }},
    "advantage": {{ 'True' if cookiecutter.include_advantage else 'False' }},
    "sampler": {{ 'True' if cookiecutter.include_sampler else 'False' }},
    "reward": {{ 'True' if cookiecutter.include_reward else 'False' }},
}
COMPONENT_NAMES = {
    "loss": {{ cookiecutter.__loss_name | tojson }},
    "advantage": {{ cookiecutter.__advantage_name | tojson }},
    "sampler": {{ cookiecutter.__sampler_name | tojson }},
    "reward": {{ cookiecutter.__reward_name | tojson }},
}

PRESET = {{ cookiecutter.__prefix | tojson }}

DISTRIBUTION_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
RESERVED_MODULES = {"rlsdk", "rlsdk_plugins", "rlsdk_kernels"}


def problems() -> list[str]:
    """Every problem with the answers (empty when they are fine)."""
    found = []
    if not DISTRIBUTION_NAME.fullmatch(PLUGIN_NAME):
        found.append(
            f"plugin_name {PLUGIN_NAME!r} is not a valid distribution name: use letters, digits, '-', '_' "
            "and '.', starting and ending with a letter or digit (e.g. rlsdk-my-loss)"
        )
    elif not MODULE.isidentifier() or keyword.iskeyword(MODULE):
        found.append(
            f"plugin_name {PLUGIN_NAME!r} gives the module name {MODULE!r}, which is not a valid Python "
            "identifier (it must not start with a digit or be a keyword); choose another name"
        )
    elif MODULE in RESERVED_MODULES:
        found.append(f"plugin_name {PLUGIN_NAME!r} gives the module name {MODULE!r}, which is rlsdk's own; choose another name")
    if not any(CHOSEN.values()):
        found.append("no component kind chosen: answer yes to at least one of include_loss, include_advantage, include_sampler, include_reward")
    return found


def main() -> int:
    """Print the problems to stderr; return the exit status."""
    found = problems()
    if not found and not ALREADY_CHECKED:
        try:
            from rlsdk.scaffold import check_installed
        except ImportError:  # rlsdk is not installed here: only the checks above apply
            check_installed = None
        if check_installed is not None:
            components = {kind: COMPONENT_NAMES[kind] for kind, chosen in CHOSEN.items() if chosen}
            components["algorithm"] = PRESET
            try:
                check_installed(PLUGIN_NAME, MODULE, components)
            except ValueError as exc:  # rlsdk.ConfigError is a ValueError
                found.append(str(exc))
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
