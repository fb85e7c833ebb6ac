"""Configuration: defaults, algorithm presets, YAML files and ``key=value`` overrides.

A config is built in layers, the later winning:

1. :data:`DEFAULTS` (below);
2. the preset of ``algorithm`` (registered by a plugin through ``register_algorithms``);
3. the YAML file given to ``rlsdk train``;
4. the command-line overrides (OmegaConf dotted keys: ``train.steps=50 loss.eps_high=0.28``).

Component sections (``task``, ``policy``, ``sampler``, ``advantage``, ``loss``) name their component
with ``name``; the other keys of the section are the factory's keyword arguments. When a later layer
changes a section's ``name`` (``loss.name=reinforce``), the options of the earlier layers for that
section are dropped, since they belonged to another component. ``rewards`` maps reward names to
``{weight: w, **options}`` (or just a number, the weight); rewards of all layers are merged.

The defaults describe the built-in CPU experiment (GRPO on 3-digit ``reverse`` with a one-layer
tiny transformer, 16 samples per prompt and an entropy bonus of 0.03; see docs/benchmarks.md).
Like any layer, their options for a component survive a later layer that names the *same*
component (a preset using ``clipped_pg`` keeps ``entropy_coef``), and are dropped when the name changes.

Unknown keys and component names are errors that list the valid choices and suggest the closest.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlsdk.errors import ConfigError, did_you_mean
from rlsdk.plugins import Registry, check_options

__all__ = ["DEFAULTS", "COMPONENT_SECTIONS", "load_config", "parse_overrides", "validate_config", "reward_specs"]

#: Sections whose ``name`` selects a registered component: section -> component kind.
COMPONENT_SECTIONS = {
    "task": "task",
    "policy": "policy",
    "sampler": "sampler",
    "advantage": "advantage",
    "loss": "loss",
}

DEFAULTS: dict[str, Any] = {
    "algorithm": "grpo",
    "seed": 0,
    "task": {"name": "reverse"},
    "policy": {"name": "tiny", "d_model": 128, "n_layers": 1},
    "sampler": {"name": "group", "n": 16, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 4},
    "advantage": {"name": "grpo"},
    "loss": {"name": "clipped_pg", "entropy_coef": 0.03},
    "rewards": {"char_match": {"weight": 1.0}, "exact_match": {"weight": 0.0}},
    "logprob": {"backend": "auto"},
    "train": {
        "steps": 300,
        "prompts_per_step": 16,
        "lr": 1e-3,
        "betas": [0.9, 0.99],
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "min_lr_ratio": 0.1,
        "max_grad_norm": 1.0,
        "epochs": 1,
        "mini_batches": 1,
        "micro_batches": 1,
        "reference": True,
        "device": "cpu",
        "threads": 0,
    },
    "eval": {"every": 0, "size": 100, "temperature": 0.0},
    "run": {"dir": None, "root": "runs", "checkpoint_every": 20, "keep_checkpoints": 2, "progress": True, "plot": True},
    "trackers": {},
}

_OPEN_SECTIONS = set(COMPONENT_SECTIONS) | {"rewards", "logprob", "trackers"}


def _to_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict (values parsed as YAML scalars/lists)."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"bad override {item!r}: expected key=value, for example train.steps=50")
    try:
        return _to_plain(OmegaConf.from_dotlist(list(overrides)))
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        raise ConfigError(f"bad override in {overrides}: {exc}") from exc


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (its interpolations resolved); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _merge_layer(base: dict[str, Any], layer: dict[str, Any], source: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in layer.items():
        if key in COMPONENT_SECTIONS:
            if isinstance(value, str):
                value = {"name": value}
            if not isinstance(value, dict):
                raise ConfigError(f"{key} (from {source}) must be a mapping with 'name', got {value!r}")
            current = out.get(key) or {}
            if "name" in value and value["name"] != current.get("name"):
                current = {}
            out[key] = {**current, **copy.deepcopy(value)}
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


def _check_keys(layer: dict[str, Any], source: str) -> None:
    for key, value in layer.items():
        if key not in DEFAULTS:
            raise ConfigError(
                f"unknown config key {key!r} (from {source}){did_you_mean(key, DEFAULTS)}; valid keys: {', '.join(DEFAULTS)}"
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
    layers: list[tuple[dict[str, Any], str]] = []
    if path is not None:
        layers.append((load_yaml(path), f"file {path}"))
    if overrides:
        parsed = overrides if isinstance(overrides, dict) else parse_overrides(list(overrides))
        layers.append((parsed, "command line"))
    for layer, source in layers:
        _check_keys(layer, source)
    if base is None:
        algorithm = DEFAULTS["algorithm"]
        for layer, _ in layers:
            algorithm = layer.get("algorithm", algorithm)
        config = _merge_layer(DEFAULTS, preset(registry, algorithm), f"algorithm {algorithm!r}")
        config["algorithm"] = algorithm
    else:
        config = copy.deepcopy(base)
    for layer, source in layers:
        config = _merge_layer(config, layer, source)
    validate_config(config, registry)
    return config


def preset(registry: Registry, algorithm: str) -> dict[str, Any]:
    """The config sections of a registered algorithm preset."""
    sections = registry.factory("algorithm", str(algorithm), where="algorithm")()
    if not isinstance(sections, dict):
        raise ConfigError(f"algorithm {algorithm!r} ({registry.owner('algorithm', algorithm)}) returned {sections!r}, not a dict")
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
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise ConfigError(f"rewards.{name}.weight must be a number, got {weight!r}")
        specs.append((str(name), float(weight), spec))
    return specs


def _positive_int(config: dict[str, Any], section: str, key: str, minimum: int = 1) -> None:
    value = config[section][key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{section}.{key} must be an integer >= {minimum}, got {value!r}")


def validate_config(config: dict[str, Any], registry: Registry) -> None:
    """Check component names, their options and the numeric settings; raise :class:`ConfigError`."""
    for section, kind in COMPONENT_SECTIONS.items():
        spec = dict(config.get(section) or {})
        if "name" not in spec:
            raise ConfigError(f"{section}.name is missing; valid: {', '.join(registry.names(kind))}")
        name = spec.pop("name")
        check_options(registry.factory(kind, str(name), where=f"{section}.name"), spec, f"{section} ({kind} {name!r})")
    for name, _, options in reward_specs(config):
        check_options(registry.factory("reward", name, where=f"rewards.{name}"), options, f"rewards.{name}")
    if not reward_specs(config):
        raise ConfigError(f"rewards is empty; give at least one, e.g. rewards.exact_match=1.0 (valid: {', '.join(registry.names('reward'))})")
    for name, options in (config.get("trackers") or {}).items():
        check_options(registry.factory("tracker", name, where=f"trackers.{name}"), dict(options or {}), f"trackers.{name}")
    backend = dict(config.get("logprob") or {})
    name = backend.pop("backend", "auto")
    if name != "auto":
        check_options(registry.factory("logprob_backend", str(name), where="logprob.backend"), backend, f"logprob ({name!r})")
    for key in ("steps", "prompts_per_step", "epochs", "mini_batches", "micro_batches"):
        _positive_int(config, "train", key)
    _positive_int(config, "train", "warmup_steps", 0)
    _positive_int(config, "run", "checkpoint_every", 0)
    _positive_int(config, "run", "keep_checkpoints", 1)
    _positive_int(config, "eval", "every", 0)
    if not isinstance(config["seed"], int) or isinstance(config["seed"], bool) or config["seed"] < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {config['seed']!r}")
    if config["train"]["lr_schedule"] not in ("constant", "cosine"):
        raise ConfigError(f"train.lr_schedule must be 'constant' or 'cosine', got {config['train']['lr_schedule']!r}")
    ratio = config["train"]["min_lr_ratio"]
    if not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise ConfigError(f"train.min_lr_ratio must be a number in [0, 1], got {ratio!r}")
    lr = config["train"]["lr"]
    if not isinstance(lr, (int, float)) or lr <= 0:
        raise ConfigError(f"train.lr must be a positive number, got {lr!r}")


def dump_yaml(config: dict[str, Any]) -> str:
    """The config as YAML text (keys in config order)."""
    return yaml.safe_dump(config, sort_keys=False)
