"""Create a new plugin package from the cookiecutter template (the logic behind ``rlsdk new-plugin``).

The template lives in the repository's top-level ``cookiecutter-plugin/`` folder. It generates an
installable package (src layout) that registers through an entry point in the group ``rlsdk``, with a
small working example of each chosen component kind, its own tests (entry-point discovery and
:mod:`rlsdk.testing`'s conformance checks), a README, a GitHub Actions workflow and
``configs/train.yaml``, a config that trains with the plugin.

Names are derived from the plugin's distribution name, here and in the template's ``cookiecutter.json``
(the two derivations are tested to agree):

- module: the name lowercased, ``-`` and ``.`` replaced by ``_`` (``rlsdk-my-loss`` -> ``rlsdk_my_loss``);
- prefix: the module without a leading ``rlsdk_`` (``my_loss``); it is the entry-point name and starts
  every component name, so the plugin's names never clash with rlsdk's own;
- components: ``<prefix>_scaled_reinforce`` (loss), ``<prefix>_mean_baseline`` (advantage),
  ``<prefix>_filter_groups`` (sampler), ``<prefix>_digit_count`` (reward), each written once in the
  generated package (``NAME`` in the component's module);
- the algorithm preset: ``<prefix>``, rlsdk's ``grpo`` with the plugin's components, which the
  generated ``configs/train.yaml`` selects.

Everything is checked before cookiecutter runs, so a rejected name writes nothing: see
:func:`plugin_names` (the name itself) and :func:`check_installed` (clashes with what is installed).

Example:
    >>> plugin_names("rlsdk-my-loss", ["loss", "reward"]).components
    {'loss': 'my_loss_scaled_reinforce', 'reward': 'my_loss_digit_count'}
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import keyword
import logging
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlsdk.errors import ConfigError, did_you_mean
from rlsdk.kinds import KINDS

if TYPE_CHECKING:
    from rlsdk.plugins import Registry

__all__ = [
    "COMPONENT_KINDS",
    "EXAMPLE_COMPONENTS",
    "TEMPLATE_ENV",
    "PluginNames",
    "parse_components",
    "plugin_names",
    "check_installed",
    "find_template",
    "new_plugin",
    "next_steps",
]

#: The component kinds the template has an example of (``scaffold`` in :data:`rlsdk.kinds.KINDS`), in
#: the order of its prompts.
COMPONENT_KINDS = tuple(name for name, kind in KINDS.items() if kind.scaffold)

#: kind -> the example's name after the plugin's prefix.
EXAMPLE_COMPONENTS = {
    "loss": "scaled_reinforce",
    "advantage": "mean_baseline",
    "sampler": "filter_groups",
    "reward": "digit_count",
}

#: Environment variable naming the template folder (overrides the repository checkout's).
TEMPLATE_ENV = "RLSDK_PLUGIN_TEMPLATE"

# PEP 508 distribution names: ASCII letters and digits, with '-', '_', '.' inside.
_DISTRIBUTION_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_RESERVED_MODULES = frozenset({"rlsdk", "rlsdk_plugins", "rlsdk_kernels"})


@dataclass(frozen=True)
class PluginNames:
    """The names a plugin package is generated with.

    Attributes:
        distribution: The distribution name, as given (``rlsdk-my-loss``).
        module: The import name of its package (``rlsdk_my_loss``).
        prefix: The entry-point name and the start of every component name (``my_loss``).
        components: kind -> registered name, for the chosen kinds, in :data:`COMPONENT_KINDS` order.
    """

    distribution: str
    module: str
    prefix: str
    components: dict[str, str] = field(default_factory=dict)

    @property
    def registers(self) -> dict[str, str]:
        """What the plugin registers, by kind (its components, and its preset named after the prefix)."""
        return {**self.components, "algorithm": self.prefix}


def _normalised(name: str) -> str:
    """PEP 503 normalisation: lowercase, runs of ``-_.`` become one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_components(components: Iterable[str] | str) -> list[str]:
    """The component kinds chosen, in :data:`COMPONENT_KINDS` order; ``"all"`` stands for every kind.

    Args:
        components: Kinds such as ``["loss", "reward"]``, or one kind as a string.

    Returns:
        The distinct kinds.

    Raises:
        ConfigError: A kind is unknown, or none is given.

    Example:
        >>> parse_components(["reward", "loss", "loss"])
        ['loss', 'reward']
    """
    given = [components] if isinstance(components, str) else list(components)
    chosen: set[str] = set()
    for kind in given:
        if kind == "all":
            chosen.update(COMPONENT_KINDS)
        elif kind in COMPONENT_KINDS:
            chosen.add(kind)
        else:
            raise ConfigError(
                f"unknown component kind {kind!r} for a new plugin{did_you_mean(str(kind), COMPONENT_KINDS)}; "
                f"valid: {', '.join(COMPONENT_KINDS)} or all"
            )
    if not chosen:
        raise ConfigError(f"a new plugin needs at least one component kind; valid: {', '.join(COMPONENT_KINDS)} or all")
    return [kind for kind in COMPONENT_KINDS if kind in chosen]


def plugin_names(name: str, components: Iterable[str] | str = ("loss",)) -> PluginNames:
    """Check a plugin's distribution name and derive its module, prefix and component names.

    Args:
        name: The distribution name (PEP 508: letters, digits, ``-``, ``_``, ``.``, starting and ending
            with a letter or digit), e.g. ``rlsdk-my-loss``.
        components: The kinds to generate (see :func:`parse_components`).

    Returns:
        The derived names.

    Raises:
        ConfigError: The name is not a valid distribution name, its module name is not a valid Python
            identifier (it starts with a digit or is a keyword) or is one of rlsdk's own packages, or
            a component kind is invalid.
    """
    if not isinstance(name, str) or not _DISTRIBUTION_NAME.fullmatch(name):
        raise ConfigError(
            f"plugin name {name!r} is not a valid distribution name: use ASCII letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit (e.g. rlsdk-my-loss)"
        )
    module = name.lower().replace("-", "_").replace(".", "_")
    if not module.isidentifier() or keyword.iskeyword(module):
        raise ConfigError(
            f"plugin name {name!r} gives the module name {module!r}, which is not a valid Python identifier "
            "(it must not start with a digit or be a keyword); choose another name, e.g. rlsdk-{module}"
        )
    if module in _RESERVED_MODULES:
        raise ConfigError(
            f"plugin name {name!r} gives the module name {module!r}, which is rlsdk's own; choose another name"
        )
    prefix = module[len("rlsdk_") :] if module.startswith("rlsdk_") and len(module) > len("rlsdk_") else module
    kinds = parse_components(components)
    return PluginNames(
        distribution=name,
        module=module,
        prefix=prefix,
        components={kind: f"{prefix}_{EXAMPLE_COMPONENTS[kind]}" for kind in kinds},
    )


def check_installed(name: str, module: str, components: Mapping[str, str], registry: Registry | None = None) -> None:
    """Check that a new plugin clashes with nothing installed.

    Args:
        name: The distribution name.
        module: The module name of its package.
        components: kind -> name of each component it will register (:attr:`PluginNames.registers`).
        registry: The registry to check the component names against (default:
            :func:`rlsdk.plugins.get_registry`, every installed plugin).

    Raises:
        ConfigError: An installed distribution has the same (normalised) name, a module of that name is
            already importable, or an installed plugin already registers one of the component names.
    """
    wanted = _normalised(name)
    for dist in importlib.metadata.distributions():
        installed = dist.metadata["Name"]
        if installed and _normalised(installed) == wanted:
            raise ConfigError(
                f"plugin name {name!r} is taken: the distribution {installed!r} {dist.version} is already installed; "
                "choose another name"
            )
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or []) or "?"
        raise ConfigError(
            f"plugin name {name!r} gives the module name {module!r}, but a module of that name is already "
            f"importable (from {where}); choose another name"
        )
    if registry is None:
        from rlsdk.plugins import get_registry

        registry = get_registry()
    for kind, component in components.items():
        if component in registry.names(kind):
            raise ConfigError(
                f"plugin name {name!r} would register the {kind} {component!r}, which the installed plugin "
                f"{registry.owner(kind, component)} already registers; choose another name"
            )


def find_template(template: str | Path | None = None) -> Path:
    """Locate the cookiecutter template folder.

    Looked up in this order: the ``template`` argument; the environment variable
    ``RLSDK_PLUGIN_TEMPLATE``; the template shipped inside the package, ``rlsdk/_template`` (in the
    repository a link to the top-level ``cookiecutter-plugin/``; in a wheel a copy of it).

    Args:
        template: A folder holding ``cookiecutter.json``, or None to search.

    Returns:
        The template folder.

    Raises:
        ConfigError: The folder given, or every folder searched, has no ``cookiecutter.json``.
    """
    if template is not None:
        candidates = [(Path(template), "the template argument")]
    elif os.environ.get(TEMPLATE_ENV):
        candidates = [(Path(os.environ[TEMPLATE_ENV]), f"${TEMPLATE_ENV}")]
    else:
        candidates = [(Path(__file__).resolve().parent / "_template", "the rlsdk package")]
    for path, _ in candidates:
        if (path / "cookiecutter.json").is_file():
            return path.resolve()
    tried = "; ".join(f"{str(path)!r} (from {source})" for path, source in candidates)
    raise ConfigError(
        f"cannot find the plugin template: no cookiecutter.json in {tried}. The template is the "
        "cookiecutter-plugin/ folder of the rlsdk repository (shipped as rlsdk/_template); "
        f"reinstall rlsdk, or point ${TEMPLATE_ENV} or --template at that folder"
    )


def new_plugin(
    name: str | None = None,
    components: Iterable[str] | str | None = None,
    output_dir: str | Path = ".",
    *,
    author: str | None = None,
    description: str | None = None,
    github_username: str | None = None,
    no_input: bool = True,
    template: str | Path | None = None,
    registry: Registry | None = None,
) -> Path:
    """Generate a plugin package with cookiecutter and return its folder.

    With ``no_input=True`` every answer comes from the arguments (the template's defaults fill in the
    rest), and all checks run before cookiecutter is called, so a rejected name writes nothing:
    :func:`plugin_names`, the target folder ``output_dir/name`` must not exist, and
    :func:`check_installed`. With ``no_input=False`` cookiecutter asks for each answer, the arguments
    being the defaults it offers; the template's ``pre_gen_project`` hook then runs the same checks
    on the answers, and cookiecutter removes the folder when they fail.

    Args:
        name: Distribution name of the plugin, e.g. ``rlsdk-my-loss`` (required when ``no_input``).
        components: Kinds to include an example of: ``loss``, ``advantage``, ``sampler``, ``reward``
            or ``all`` (default: ``loss`` only, as the template).
        output_dir: Folder in which the package folder is created.
        author: The author written into pyproject.toml and the README.
        description: One-line description for pyproject.toml and the README.
        github_username: User or organisation of the project URLs and README.
        no_input: Do not prompt.
        template: The template folder (default: see :func:`find_template`).
        registry: Registry to check component names against (default: every installed plugin).

    Returns:
        The generated package's folder.

    Raises:
        ConfigError: A name, component kind or folder is invalid or clashes with an installed one, the
            template is missing, or the template's checks rejected the answers given interactively.
    """
    template_dir = find_template(template)
    output = Path(output_dir)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output directory {str(output)!r} exists and is not a directory")
    kinds = parse_components(components) if components is not None else None
    if no_input:
        if name is None:
            raise ConfigError("a plugin name is required without prompts (rlsdk new-plugin NAME --no-input)")
        kinds = kinds or ["loss"]
    context: dict[str, Any] = {}
    if name is not None:
        names = plugin_names(name, kinds or ["loss"])  # interactive: the name offered must be valid too
        context["plugin_name"] = name
        if no_input:
            target = output / names.distribution
            if target.exists():
                raise ConfigError(f"{str(target)!r} already exists; choose another plugin name or --output-dir")
            check_installed(names.distribution, names.module, names.registers, registry)
    if kinds is not None:
        context.update({f"include_{kind}": kind in kinds for kind in COMPONENT_KINDS})
    for key, value in (("author", author), ("description", description), ("github_username", github_username)):
        if value is not None:
            context[key] = value
    context["_rlsdk_checked"] = bool(no_input)  # the hook repeats the installed checks on interactive answers
    return _run_cookiecutter(template_dir, context, output, no_input)


def _run_cookiecutter(template_dir: Path, context: dict[str, Any], output: Path, no_input: bool) -> Path:
    """Call cookiecutter; turn its refusals into :class:`ConfigError`."""
    try:
        from cookiecutter.exceptions import FailedHookException, OutputDirExistsException
        from cookiecutter.main import cookiecutter
    except ImportError as exc:
        raise ConfigError("rlsdk new-plugin needs cookiecutter: pip install 'cookiecutter>=2.5'") from exc
    # cookiecutter logs a failing hook's traceback; the hook has printed the reason already.
    hook_log = logging.getLogger("cookiecutter.hooks")
    quiet = logging.NullHandler()
    hook_log.addHandler(quiet)
    try:
        project = cookiecutter(str(template_dir), no_input=no_input, extra_context=context, output_dir=str(output))
    except OutputDirExistsException as exc:
        raise ConfigError(f"the plugin's folder already exists in {str(output)!r}: {exc}; choose another name") from exc
    except FailedHookException as exc:
        raise ConfigError(
            f"the template rejected the answers (see the error above); nothing was written: {exc}"
        ) from exc
    finally:
        hook_log.removeHandler(quiet)
    return Path(project)


def next_steps(project: str | Path) -> str:
    """The message printed after a plugin is created: where it is and the commands to run next.

    Args:
        project: The generated package's folder.

    Returns:
        A few lines of text.
    """
    return (
        f"Created the plugin package {project}\n"
        "Next:\n"
        f"  cd {shlex.quote(str(project))}\n"
        "  pip install -e '.[test]'      # install it: `rlsdk plugins` now lists it\n"
        "  pytest                        # discovery, conformance checks, formulas\n"
        "  rlsdk train configs/train.yaml  # train with its components"
    )
