"""Configuration: defaults, algorithm presets, YAML files and ``key=value`` overrides.

A config is built in layers, the later winning:

1. :data:`DEFAULTS` (below): the experiment (task, policy, sampler, engine, rewards) and the core's
   settings (``train``, ``eval``, ``run``; typed in :mod:`rlsdk.settings`), but no algorithm option;
2. the preset of ``algorithm`` (registered by a plugin through ``register_algorithms``), which states
   every option of its advantage estimator and loss;
3. the YAML file given to ``rlsdk train``;
4. the command-line overrides (OmegaConf dotted keys: ``train.steps=50 loss.eps_high=0.28``).

The shape of each component's section comes from its kind (:data:`rlsdk.kinds.KINDS`): ``task``,
``policy``, ``sampler``, ``engine``, ``advantage`` and ``loss`` name their component with ``name``,
and the other keys of the section are the factory's keyword arguments. When a later layer changes a
section's ``name`` (``loss.name=reinforce``), the options of the earlier layers that the new
component also takes are kept and the others are dropped: ``algorithm=grpo loss.name=reinforce``
keeps GRPO's aggregation and entropy bonus and drops the clipping range, so an ablation arm changes
one thing. ``rewards`` maps reward names to ``{weight: w, **options}`` (or just a number, the
weight); rewards of all layers are merged.

Unknown keys and component names are errors that list the valid choices and suggest the closest.
:func:`load_config` checks the whole config before anything is built (see :func:`validate_config`):
every setting's type and range, the device, the options of every component (building the cheap ones,
so their factories' own checks run too) and, through the ``check_config`` hook, the settings that
involve several components together. A YAML file that gives a key twice is an error.
:func:`resolve_config` also says where each value came from, which ``rlsdk train --print-config``
shows (:func:`dump_yaml`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlsdk.errors import ConfigError, did_you_mean
from rlsdk.kinds import KINDS
from rlsdk.plugins import Registry, check_options, factory_options
from rlsdk.settings import EvalSettings, RunSettings, Settings, TrainSettings, defaults
from rlsdk.validation import check_number

__all__ = [
    "DEFAULTS",
    "COMPONENT_SECTIONS",
    "load_config",
    "resolve_config",
    "dump_yaml",
    "load_yaml",
    "load_yaml_text",
    "parse_overrides",
    "validate_config",
    "reward_specs",
]

#: Sections whose ``name`` selects a registered component: section -> component kind (the kinds
#: of shape ``named`` in :data:`rlsdk.kinds.KINDS`).
COMPONENT_SECTIONS = {k.section: k.name for k in KINDS.values() if k.shape == "named"}

#: The first layer of every config. The component sections name their component and carry only
#: options of the experiment (the task's digits, the policy's size, the sampler's group size): the
#: algorithm's options come from its preset.
DEFAULTS: dict[str, Any] = {
    "algorithm": "grpo",
    "seed": 0,
    "task": {"name": "reverse"},
    "policy": {"name": "tiny", "d_model": 128, "n_layers": 1},
    "sampler": {"name": "group", "n": 16, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4},
    "engine": {"name": "inprocess"},
    "advantage": {"name": "grpo"},
    "loss": {"name": "clipped_pg"},
    "rewards": {"char_match": {"weight": 1.0}, "exact_match": {"weight": 0.0}},
    "logprob": {"backend": "auto"},
    "train": defaults(TrainSettings),
    "eval": defaults(EvalSettings),
    "run": defaults(RunSettings),
    "trackers": {},
}

_OPEN_SECTIONS = set(COMPONENT_SECTIONS) | {"rewards", "logprob", "trackers"}


def _to_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict (values parsed as YAML scalars/lists).

    Interpolations (``${...}``, such as ``${oc.env:HOME}``) are refused: OmegaConf would resolve
    them, writing an environment variable's value into the run's saved config.
    """
    for item in overrides:
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            raise ConfigError(f"bad override {item!r}: expected key=value, for example train.steps=50")
        if "${" in item:
            raise ConfigError(
                f"override {item!r}: interpolations (${{...}}) are not supported in overrides; write the value itself"
            )
    try:
        return _to_plain(OmegaConf.from_dotlist(list(overrides)))
    except (OmegaConfBaseException, yaml.YAMLError):
        for item in overrides:  # name the one that fails
            try:
                OmegaConf.from_dotlist([item])
            except (OmegaConfBaseException, yaml.YAMLError) as own:
                exc = own
                break
        else:
            item = " ".join(overrides)
        reason = " ".join(str(exc).split("\n")[0].split())
        raise ConfigError(
            f"bad override {item!r}: not a valid YAML value ({reason}); e.g. train.betas=[0.9,0.99]"
        ) from exc


class _DuplicateKey(Exception):
    """Raised by :class:`_StrictLoader`: ``key`` appears twice in one mapping (1-based lines)."""

    def __init__(self, key: Any, line: int, first: int):
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping giving the same key twice (PyYAML keeps the last).

    Merge keys (``<<: *anchor``) are not duplicates: the mapping's own keys override the merged ones.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse YAML ``text`` like ``yaml.safe_load``, but a key given twice in a mapping is an error.

    Args:
        text: The YAML document.
        source: What the text is, for messages, e.g. ``"config file 'x.yaml'"`` or ``"experiment file 'e.yaml'"``.

    Returns:
        The parsed data (None for an empty document).

    Raises:
        ConfigError: ``"{source} line 7: key 'arms' appears twice (first on line 3)"``, or
            ``"{source} is not valid YAML: ..."``.
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as exc:
        raise ConfigError(
            f"{source} line {exc.line}: key {exc.key!r} appears twice (first on line {exc.first}); keep one"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}") from exc


def load_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file holding a mapping (no interpolation is resolved); errors name the file.

    Args:
        path: The file.
        what: What the file is, for messages (``"config file"``, ``"experiment file"`` ...).

    Returns:
        The mapping (``{}`` for an empty file).

    Raises:
        ConfigError: The path does not exist or is a folder, the file is not UTF-8 text or not valid
            YAML, gives a key twice (at any depth), or does not hold a mapping.
    """
    path = Path(path)
    source = f"{what} {str(path)!r}"
    if path.is_dir():
        raise ConfigError(f"{source} is a folder, not a file; give the YAML file inside it")
    if not path.is_file():
        raise ConfigError(f"{source} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark is fine
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source} is not UTF-8 text: {exc}; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{source} cannot be read: {exc}") from exc
    data = load_yaml_text(text, source)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _merge_layer(
    base: dict[str, Any], layer: dict[str, Any], source: str, registry: Registry | None = None
) -> dict[str, Any]:
    """``layer`` over ``base``. A component section whose ``name`` changes keeps the options of
    ``base`` that the new component's factory takes (all of them when ``registry`` is None, or the
    factory takes ``**options``) and drops the others."""
    out = copy.deepcopy(base)
    for key, value in layer.items():
        if key in COMPONENT_SECTIONS:
            if isinstance(value, str):
                value = {"name": value}
            if not isinstance(value, dict):
                raise ConfigError(f"{key} (from {source}) must be a mapping with 'name', got {value!r}")
            current = dict(out.get(key) or {})
            if "name" in value and value["name"] != current.get("name"):
                takes = _options_taken(registry, COMPONENT_SECTIONS[key], value["name"])
                current = {k: v for k, v in current.items() if k != "name" and (takes is None or k in takes)}
            merged = {**current, **copy.deepcopy(value)}
            out[key] = {"name": merged.pop("name"), **merged} if "name" in merged else merged
        elif key == "rewards":
            if not isinstance(value, dict):
                raise ConfigError(f"rewards (from {source}) must map reward names to weights or options, got {value!r}")
            rewards = dict(out.get("rewards") or {})
            for name, spec in value.items():
                spec = {"weight": spec} if isinstance(spec, (int, float)) else spec
                if not isinstance(spec, dict):
                    raise ConfigError(f"rewards.{name} (from {source}) must be a weight or a mapping, got {spec!r}")
                rewards[name] = {**(rewards.get(name) or {}), **spec}
            out["rewards"] = rewards
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _options_taken(registry: Registry | None, kind: str, name: Any) -> set[str] | None:
    """The keyword options of component ``name``'s factory; None when any is taken (``**options``),
    or when there is no registry or no such component (validation reports an unknown name)."""
    if registry is None or not isinstance(name, str) or name not in registry.names(kind):
        return None
    params = factory_options(registry.factory(kind, name))
    return None if params is None else set(params)


def _check_keys(layer: dict[str, Any], source: str) -> None:
    for key, value in layer.items():
        if key not in DEFAULTS:
            raise ConfigError(
                f"unknown config key {key!r} (from {source}){did_you_mean(key, DEFAULTS)}; "
                f"valid keys: {', '.join(DEFAULTS)}"
            )
        if key in _OPEN_SECTIONS or not isinstance(DEFAULTS[key], dict):
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{key} (from {source}) must be a mapping, got {value!r}")
        for sub in value:
            if sub not in DEFAULTS[key]:
                raise ConfigError(
                    f"unknown config key '{key}.{sub}' (from {source}){did_you_mean(sub, DEFAULTS[key])}; "
                    f"valid keys in {key}: {', '.join(DEFAULTS[key])}"
                )


def load_config(
    registry: Registry,
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and validate the resolved config (a plain dict).

    Args:
        registry: Supplies the algorithm presets and validates component names and options.
        path: Optional YAML file.
        overrides: ``key=value`` strings (or an already nested dict).
        base: Start from this config instead of :data:`DEFAULTS` + preset (used by ``--resume``).
    """
    return resolve_config(registry, path, overrides, base)[0]


def resolve_config(
    registry: Registry,
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`load_config`, and where each value came from.

    Returns:
        ``(config, sources)``: ``sources`` maps dotted keys (``"train.lr"``, ``"loss.eps_high"``,
        ``"rewards.exact_match"``, ``"seed"``) to ``"algorithm 'grpo'"``, ``"file x.yaml"``,
        ``"command line"`` or ``"run config"`` (``base``); a key it lacks is a default.
    """
    layers: list[tuple[dict[str, Any], str]] = []
    if path is not None:
        layers.append((load_yaml(path), f"file {path}"))
    if overrides:
        parsed = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        layers.append((parsed, "command line"))
    for layer, source in layers:
        _check_keys(layer, source)
    sources: dict[str, str] = {}
    if base is None:
        algorithm = DEFAULTS["algorithm"]
        for layer, _ in layers:
            algorithm = layer.get("algorithm", algorithm)
        sections = preset(registry, algorithm)
        config = _merge_layer(DEFAULTS, sections, f"algorithm {algorithm!r}", registry)
        config["algorithm"] = algorithm
        sources.update(_layer_sources(sections, f"algorithm {algorithm!r}"))
    else:
        config = copy.deepcopy(base)
        sources.update(_layer_sources(base, "run config"))
        for section in ("train", "eval", "run"):  # a run saved before a key was added: its default
            if isinstance(config.get(section), dict):
                config[section] = {**copy.deepcopy(DEFAULTS[section]), **config[section]}
        for section in COMPONENT_SECTIONS:  # a run saved before the section existed (engine)
            config.setdefault(section, copy.deepcopy(DEFAULTS[section]))
    for layer, source in layers:
        config = _merge_layer(config, layer, source, registry)
        sources.update(_layer_sources(layer, source))
    validate_config(config, registry, sources)
    return config, sources


def _layer_sources(layer: dict[str, Any], source: str) -> dict[str, str]:
    """``{"train.lr": source, "task.name": source, "seed": source ...}`` for the keys ``layer`` sets."""
    out = {}
    for key, value in layer.items():
        if key in COMPONENT_SECTIONS and isinstance(value, str):
            out[f"{key}.name"] = source
        elif isinstance(value, dict):
            out[key] = source
            out.update({f"{key}.{sub}": source for sub in value})
        else:
            out[key] = source
    return out


def preset(registry: Registry, algorithm: str) -> dict[str, Any]:
    """The config sections of a registered algorithm preset."""
    sections = registry.factory("algorithm", str(algorithm), where="algorithm")()
    if not isinstance(sections, dict):
        raise ConfigError(
            f"algorithm {algorithm!r} ({registry.owner('algorithm', algorithm)}) returned {sections!r}, not a dict"
        )
    allowed = set(COMPONENT_SECTIONS) | {"rewards", "logprob", "train"}
    for key in sections:
        if key not in allowed:
            raise ConfigError(
                f"algorithm {algorithm!r} ({registry.owner('algorithm', algorithm)}) sets section {key!r}; "
                f"presets may set: {', '.join(sorted(allowed))}"
            )
    _check_keys({k: v for k, v in sections.items()}, f"algorithm {algorithm!r}")
    return copy.deepcopy(sections)


def reward_specs(config: dict[str, Any]) -> list[tuple[str, float, dict[str, Any]]]:
    """``[(name, weight, options)]`` of the config's rewards, in config order."""
    specs = []
    for name, spec in (config.get("rewards") or {}).items():
        spec = dict(spec or {})
        weight = spec.pop("weight", 1.0)
        specs.append((str(name), check_number(weight, f"rewards.{name}.weight"), spec))
    return specs


def validate_config(config: dict[str, Any], registry: Registry, sources: dict[str, str] | None = None) -> Settings:
    """Check a whole config; raise :class:`ConfigError` (one line naming the key, the value and what is valid).

    In order: component names and their options (against the factories' signatures), rewards,
    trackers and the logprob backend; the type, range and finiteness of every ``seed``, ``train``,
    ``eval`` and ``run`` setting, and that ``train.device`` exists on this machine
    (:meth:`rlsdk.settings.Settings.from_config`); then the components whose kind is cheap to build
    (``build_to_validate`` in :data:`rlsdk.kinds.KINDS`: loss, advantage, sampler, logprob backend)
    are built and dropped, so their factories' own checks run (``advantage.eps=-1``); then every
    plugin's ``check_config`` hook, for the settings that involve several components together
    (``sampler.n >= 2`` for a group-normalised advantage, a policy that fits in memory ...).

    Args:
        config: The resolved config.
        registry: The components, and the plugins whose ``check_config`` hooks run.
        sources: Where each dotted key came from (``{"train.lr": "command line"}``), shown in messages.

    Returns:
        The typed settings of ``seed``, ``train``, ``eval`` and ``run``.
    """
    sources = sources or {}
    for section, kind in COMPONENT_SECTIONS.items():
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"{section} must be a mapping with 'name', got {config.get(section)!r}")
        spec = dict(config[section])
        if "name" not in spec:
            raise ConfigError(f"{section}.name is missing; valid: {', '.join(registry.names(kind))}")
        name = spec.pop("name")
        check_options(registry.factory(kind, str(name), where=f"{section}.name"), spec, f"{section} ({kind} {name!r})")
    for name, _, options in reward_specs(config):
        check_options(registry.factory("reward", name, where=f"rewards.{name}"), options, f"rewards.{name}")
    if not reward_specs(config):
        raise ConfigError(
            f"rewards is empty; give at least one, e.g. rewards.exact_match=1.0 "
            f"(valid: {', '.join(registry.names('reward'))})"
        )
    for section in ("logprob", "trackers"):
        if config.get(section) is not None and not isinstance(config[section], dict):
            raise ConfigError(f"{_named(section, sources)} must be a mapping, got {config[section]!r}")
    for name, options in (config.get("trackers") or {}).items():
        if options is not None and not isinstance(options, dict):
            raise ConfigError(
                f"{_named(f'trackers.{name}', sources)} must be a mapping of the tracker's options or null, "
                f"got {options!r}"
            )
    settings = Settings.from_config(config, sources)
    for name, options in (config.get("trackers") or {}).items():
        check_options(
            registry.factory("tracker", name, where=f"trackers.{name}"), dict(options or {}), f"trackers.{name}"
        )
    backend = dict(config.get("logprob") or {})
    name = backend.pop("backend", "auto")
    if name != "auto":
        check_options(
            registry.factory("logprob_backend", str(name), where="logprob.backend"), backend, f"logprob ({name!r})"
        )
    _build_cheap(config, registry)
    _check_combinations(config, registry)
    return settings


def _named(key: str, sources: dict[str, str]) -> str:
    return f"{key} (from {sources[key]})" if key in sources else key


def _build_cheap(config: dict[str, Any], registry: Registry) -> None:
    """Build (and drop) the components whose kind has ``build_to_validate``, so a bad option fails
    now with its factory's message. ``logprob.backend: auto`` is left to the trainer, which knows
    the device."""
    for spec in KINDS.values():
        if not spec.build_to_validate:
            continue
        options = dict(config.get(spec.section) or {})
        key = "backend" if spec.shape == "backend" else "name"
        name = options.pop(key, "auto" if spec.shape == "backend" else None)
        if name == "auto":
            continue
        registry.build(spec.name, str(name), options, spec.section)


def _check_combinations(config: dict[str, Any], registry: Registry) -> None:
    """Run every plugin's ``check_config`` hook on ``config`` (a copy: a hook cannot change it).

    A :class:`ConfigError` passes through; any other exception becomes a ConfigError naming the plugin.
    """
    for impl in registry.pm.hook.check_config.get_hookimpls():
        if getattr(impl, "hookwrapper", False) or getattr(impl, "wrapper", False):
            continue  # a wrapper only makes sense around the other implementations
        kwargs = {"config": copy.deepcopy(config)}
        try:
            impl.function(*[kwargs[arg] for arg in impl.argnames])
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug in a plugin's check: report it by name
            raise ConfigError(
                f"plugin {impl.plugin_name} failed while checking the config (its check_config hook raised "
                f"{type(exc).__name__}: {exc}); fix or uninstall the plugin"
            ) from exc


def dump_yaml(config: dict[str, Any], sources: dict[str, str] | None = None) -> str:
    """The config as YAML text (keys in config order).

    Args:
        config: A config.
        sources: Where each dotted key came from (:func:`resolve_config`): when given, each value
            is followed by a comment naming its source (``# default`` when the key has none). The text
            still loads back to ``config``.
    """
    if sources is None:
        return yaml.safe_dump(config, sort_keys=False)
    lines = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            lines.append(f"{key}:")
            lines += [
                f"  {_yaml_key(sub)}: {_flow(item)}  # {sources.get(f'{key}.{sub}', 'default')}"
                for sub, item in value.items()
            ]
        else:
            lines.append(f"{key}: {_flow(value)}  # {sources.get(key, 'default')}")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    """``value`` as one line of flow-style YAML."""
    return yaml.safe_dump([value], default_flow_style=True, width=10**6).strip()[1:-1]


def _yaml_key(key: Any) -> str:
    return _flow(key) if not isinstance(key, str) or _flow(key) != key else key
