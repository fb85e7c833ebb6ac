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
:func:`load_config` checks the whole config before anything is built (see :func:`validate_config`):
every setting's type and range, the device, and, through the ``check_config`` hook, the settings
that involve several components together. A YAML file that gives a key twice is an error.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlsdk.errors import ConfigError, did_you_mean
from rlsdk.plugins import Registry, check_options
from rlsdk.validation import check_bool, check_choice, check_int, check_number

__all__ = [
    "DEFAULTS",
    "COMPONENT_SECTIONS",
    "load_config",
    "load_yaml",
    "load_yaml_text",
    "parse_overrides",
    "validate_config",
    "reward_specs",
]

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
    except (OmegaConfBaseException, yaml.YAMLError) as exc:
        for item in overrides:  # name the one that fails
            try:
                OmegaConf.from_dotlist([item])
            except (OmegaConfBaseException, yaml.YAMLError) as own:
                exc = own
                break
        else:
            item = " ".join(overrides)
        reason = " ".join(str(exc).split("\n")[0].split())
        raise ConfigError(f"bad override {item!r}: not a valid YAML value ({reason}); e.g. train.betas=[0.9,0.99]") from exc


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
    sources: dict[str, str] = {}
    if base is None:
        algorithm = DEFAULTS["algorithm"]
        for layer, _ in layers:
            algorithm = layer.get("algorithm", algorithm)
        sections = preset(registry, algorithm)
        config = _merge_layer(DEFAULTS, sections, f"algorithm {algorithm!r}")
        config["algorithm"] = algorithm
        sources.update(_layer_sources(sections, f"algorithm {algorithm!r}"))
    else:
        config = copy.deepcopy(base)
        for section in ("train", "eval", "run"):  # a run saved before a key was added: its default
            if isinstance(config.get(section), dict):
                config[section] = {**copy.deepcopy(DEFAULTS[section]), **config[section]}
    for layer, source in layers:
        config = _merge_layer(config, layer, source)
        sources.update(_layer_sources(layer, source))
    validate_config(config, registry, sources)
    return config


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
        specs.append((str(name), check_number(weight, f"rewards.{name}.weight"), spec))
    return specs


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    """The per-key checks of :func:`validate_config`; an option's name carries where it came from."""

    def __init__(self, config: dict[str, Any], sources: dict[str, str]):
        self.config, self.sources = config, sources

    def name(self, key: str) -> str:
        """``"train.lr (from command line)"``, or just ``"train.lr"`` when the source is unknown."""
        source = self.sources.get(key)
        return f"{key} (from {source})" if source else key

    def value(self, key: str) -> Any:
        section, _, sub = key.partition(".")
        return self.config[section][sub] if sub else self.config[section]

    def integer(self, key: str, low: int) -> None:
        check_int(self.value(key), self.name(key), low=low)

    def number(self, key: str, low: float, high: float | None = None, **bounds: bool) -> None:
        check_number(self.value(key), self.name(key), low=low, high=high, **bounds)

    def boolean(self, key: str) -> None:
        check_bool(self.value(key), self.name(key))

    def string(self, key: str, none_ok: bool = False) -> None:
        value = self.value(key)
        if not ((isinstance(value, str) and value) or (value is None and none_ok)):
            raise ConfigError(f"{self.name(key)} must be a non-empty string{' or null' if none_ok else ''}, got {value!r}")


def _check_settings(config: dict[str, Any], sources: dict[str, str]) -> None:
    """Type, range and finiteness of every setting of ``seed``, ``train``, ``eval`` and ``run``."""
    c = _Checker(config, sources)
    if "seed" not in config:
        raise ConfigError("seed is missing; start from rlsdk.config.DEFAULTS (load_config does)")
    for section in ("train", "eval", "run"):
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"{c.name(section)} must be a mapping, got {config.get(section)!r}")
        missing = [key for key in DEFAULTS[section] if key not in config[section]]
        if missing:  # a hand-made or old config: load_config always fills them from DEFAULTS
            raise ConfigError(f"{section} lacks the key(s) {', '.join(missing)}; start from rlsdk.config.DEFAULTS (load_config does)")
    c.integer("seed", 0)
    for key in ("steps", "prompts_per_step", "epochs", "mini_batches", "micro_batches"):
        c.integer(f"train.{key}", 1)
    c.integer("train.warmup_steps", 0)
    # AdamW moves each weight by about lr per step whatever the gradient's scale: above 1 that is
    # larger than the weights themselves and training diverges, so a bigger value is a typo.
    c.number("train.lr", 0.0, 1.0, low_open=True)
    betas = config["train"]["betas"]
    if not (
        isinstance(betas, (list, tuple))
        and len(betas) == 2
        and all(_is_number(b) and math.isfinite(b) and 0 <= b < 1 for b in betas)
    ):
        raise ConfigError(
            f"{c.name('train.betas')} must be a list of two numbers, each >= 0 and < 1 (AdamW's beta1 and beta2, "
            f"e.g. [0.9, 0.99]), got {betas!r}"
        )
    c.number("train.weight_decay", 0.0)
    check_choice(config["train"]["lr_schedule"], c.name("train.lr_schedule"), ("constant", "cosine"))
    c.number("train.min_lr_ratio", 0.0, 1.0)
    norm = config["train"]["max_grad_norm"]  # the trainer clips at it, or not at all when it is 0 or null
    if norm is not None and not (_is_number(norm) and math.isfinite(norm) and norm >= 0):
        raise ConfigError(
            f"{c.name('train.max_grad_norm')} must be a finite number > 0, or 0 or null to disable clipping, got {norm!r}"
        )
    c.boolean("train.reference")
    _check_device(config["train"]["device"], c.name("train.device"))
    c.integer("train.threads", 0)
    c.integer("eval.every", 0)
    size = config["eval"]["size"]  # 0 and null: every held-out example (trainer.evaluate: ``if size: examples[:size]``)
    if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        raise ConfigError(
            f"{c.name('eval.size')} must be an integer >= 1, or 0 or null for every held-out example, got {size!r}"
        )
    c.number("eval.temperature", 0.0)
    c.string("run.dir", none_ok=True)
    c.string("run.root")
    c.integer("run.checkpoint_every", 0)
    c.integer("run.keep_checkpoints", 1)
    c.boolean("run.progress")
    c.boolean("run.plot")
    for section in ("logprob", "trackers"):
        if config.get(section) is not None and not isinstance(config[section], dict):
            raise ConfigError(f"{c.name(section)} must be a mapping, got {config[section]!r}")
    for name, options in (config.get("trackers") or {}).items():
        if options is not None and not isinstance(options, dict):
            raise ConfigError(f"{c.name(f'trackers.{name}')} must be a mapping of the tracker's options or null, got {options!r}")


def _check_device(value: Any, option: str) -> None:
    """``value`` names a torch device that exists here: cuda needs a GPU of that index, mps a Mac GPU."""
    import torch  # here, not at the top: reading a config must not import torch before it is needed

    available = ["cpu"]
    if torch.cuda.is_available():
        available += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    here = f"available here: {', '.join(available)}"
    try:
        if not isinstance(value, str):
            raise TypeError
        device = torch.device(value)
    except (TypeError, RuntimeError):
        raise ConfigError(f"{option} must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}; {here}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} is {value!r}, but torch finds no CUDA GPU on this machine; {here}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{option} is {value!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s); {here}"
            )
    elif device.type == "mps" and "mps" not in available:
        raise ConfigError(f"{option} is {value!r}, but the MPS backend (Apple GPUs) is not available here; {here}")


def validate_config(config: dict[str, Any], registry: Registry, sources: dict[str, str] | None = None) -> None:
    """Check a whole config; raise :class:`ConfigError` (one line naming the key, the value and what is valid).

    In order: component names and their options (against the factories' signatures), rewards,
    trackers and the logprob backend; the type, range and finiteness of every ``seed``, ``train``,
    ``eval`` and ``run`` setting, and that ``train.device`` exists on this machine; then every
    plugin's ``check_config`` hook, for the settings that involve several components together
    (``sampler.n >= 2`` for a group-normalised advantage, a policy that fits in memory ...).

    Args:
        config: The resolved config.
        registry: The components, and the plugins whose ``check_config`` hooks run.
        sources: Where each dotted key came from (``{"train.lr": "command line"}``), shown in messages.
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
        raise ConfigError(f"rewards is empty; give at least one, e.g. rewards.exact_match=1.0 (valid: {', '.join(registry.names('reward'))})")
    _check_settings(config, sources)
    for name, options in (config.get("trackers") or {}).items():
        check_options(registry.factory("tracker", name, where=f"trackers.{name}"), dict(options or {}), f"trackers.{name}")
    backend = dict(config.get("logprob") or {})
    name = backend.pop("backend", "auto")
    if name != "auto":
        check_options(registry.factory("logprob_backend", str(name), where="logprob.backend"), backend, f"logprob ({name!r})")
    _check_combinations(config, registry)


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


def dump_yaml(config: dict[str, Any]) -> str:
    """The config as YAML text (keys in config order)."""
    return yaml.safe_dump(config, sort_keys=False)
