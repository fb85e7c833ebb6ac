"""Typed settings of the config sections the core owns: ``seed``, ``train``, ``eval`` and ``run``.

Each section is a frozen dataclass whose field defaults are the defaults of
:data:`rlsdk.config.DEFAULTS`. :meth:`Settings.from_config` checks every value (type, range,
finiteness, that the device exists) with a one-line :class:`~rlsdk.errors.ConfigError` naming the
key and where it came from, and returns the typed values the trainer reads
(``settings.train.lr``, never ``float(config["train"]["lr"])``).

The component sections (``loss``, ``sampler`` ...) belong to their components: their factories'
signatures and checks are their types (:mod:`rlsdk.kinds`, :func:`rlsdk.config.validate_config`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

from rlsdk.errors import ConfigError
from rlsdk.validation import check_bool, check_choice, check_int, check_number

__all__ = ["TrainSettings", "EvalSettings", "RunSettings", "Settings", "LR_SCHEDULES"]

#: ``train.lr_schedule``: constant after warm-up, or cosine decay to ``min_lr_ratio * lr``.
LR_SCHEDULES = ("constant", "cosine")

_T = TypeVar("_T")


@dataclass(frozen=True)
class TrainSettings:
    """``train``: the optimiser, the batch layout and the device.

    Attributes:
        steps: Optimiser steps of the run (>= 1).
        prompts_per_step: Prompts drawn per step; the sampler completes each ``sampler.n`` times.
        lr: AdamW's learning rate, in (0, 1].
        betas: AdamW's ``(beta1, beta2)``, each in [0, 1).
        weight_decay: AdamW's decoupled weight decay (>= 0).
        warmup_steps: Steps of linear warm-up from 0 (>= 0).
        lr_schedule: One of :data:`LR_SCHEDULES`.
        min_lr_ratio: The cosine schedule's floor, as a fraction of ``lr``.
        max_grad_norm: Clip the gradient's global norm at this; 0 or None: no clipping.
        epochs: Passes over each step's rollouts (>= 1).
        mini_batches: Optimiser steps per epoch, each on one slice of the rollouts (>= 1).
        micro_batches: Slices each mini-batch is split into for gradient accumulation (>= 1).
        reference: Keep a frozen copy of the initial policy for reference log-probs (KL terms).
        device: A torch device that exists here (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        threads: ``torch.set_num_threads``; 0 leaves torch's choice.
    """

    steps: int = 300
    prompts_per_step: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"
    min_lr_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    epochs: int = 1
    mini_batches: int = 1
    micro_batches: int = 1
    reference: bool = True
    device: str = "cpu"
    threads: int = 0


@dataclass(frozen=True)
class EvalSettings:
    """``eval``: held-out evaluation during training.

    Attributes:
        every: Evaluate every this many steps; 0: never during training.
        size: Held-out examples per evaluation; 0 or None: all of them.
        temperature: Sampling temperature of evaluation (0: greedy), passed to ``sampler.eval_params``.
    """

    every: int = 0
    size: int | None = 100
    temperature: float = 0.0


@dataclass(frozen=True)
class RunSettings:
    """``run``: the run folder and what is written to it.

    Attributes:
        dir: The run folder; None: a new one under ``root``.
        root: Where new run folders are made.
        checkpoint_every: Save a checkpoint every this many steps; 0: only at the end.
        keep_checkpoints: Checkpoints kept (>= 1, the newest).
        progress: Show a progress bar.
        plot: Write the run's plots at the end.
    """

    dir: str | None = None
    root: str = "runs"
    checkpoint_every: int = 20
    keep_checkpoints: int = 2
    progress: bool = True
    plot: bool = True


def defaults(section: type) -> dict[str, Any]:
    """The defaults of a settings dataclass as a plain, YAML-ready dict (tuples as lists)."""
    return {f.name: list(f.default) if isinstance(f.default, tuple) else f.default for f in dataclasses.fields(section)}


@dataclass(frozen=True)
class Settings:
    """The typed ``seed``, ``train``, ``eval`` and ``run`` of a resolved config."""

    seed: int
    train: TrainSettings
    eval: EvalSettings
    run: RunSettings

    @classmethod
    def from_config(cls, config: dict[str, Any], sources: dict[str, str] | None = None) -> Settings:
        """Check and type the core's sections of ``config``.

        Args:
            config: A resolved config (:func:`rlsdk.config.load_config` fills every key from the defaults).
            sources: Where each dotted key came from (``{"train.lr": "command line"}``), shown in messages.

        Raises:
            ConfigError: One line naming the key, its source, the value and what is valid.
        """
        c = _Checker(config, sources or {})
        if "seed" not in config:
            raise ConfigError("seed is missing; start from rlsdk.config.DEFAULTS (load_config does)")
        for section, typed in (("train", TrainSettings), ("eval", EvalSettings), ("run", RunSettings)):
            if not isinstance(config.get(section), dict):
                raise ConfigError(f"{c.name(section)} must be a mapping, got {config.get(section)!r}")
            missing = [f.name for f in dataclasses.fields(typed) if f.name not in config[section]]
            if missing:  # a hand-made or old config: load_config always fills them from DEFAULTS
                raise ConfigError(
                    f"{section} lacks the key(s) {', '.join(missing)}; "
                    "start from rlsdk.config.DEFAULTS (load_config does)"
                )
        c.integer("seed", 0)
        for key in ("steps", "prompts_per_step", "epochs", "mini_batches", "micro_batches"):
            c.integer(f"train.{key}", 1)
        c.integer("train.warmup_steps", 0)
        # AdamW moves each weight by about lr per step whatever the gradient's scale: above 1 that is
        # larger than the weights themselves and training diverges, so a bigger value is a typo.
        c.number("train.lr", 0.0, 1.0, low_open=True)
        betas = c.value("train.betas")
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
        check_choice(c.value("train.lr_schedule"), c.name("train.lr_schedule"), LR_SCHEDULES)
        c.number("train.min_lr_ratio", 0.0, 1.0)
        norm = c.value("train.max_grad_norm")
        if norm is not None and not (_is_number(norm) and math.isfinite(norm) and norm >= 0):
            raise ConfigError(
                f"{c.name('train.max_grad_norm')} must be a finite number > 0, or 0 or null to disable clipping, "
                f"got {norm!r}"
            )
        c.boolean("train.reference")
        _check_device(c.value("train.device"), c.name("train.device"))
        c.integer("train.threads", 0)
        c.integer("eval.every", 0)
        size = c.value("eval.size")
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

        train = _typed(TrainSettings, config["train"])
        return cls(
            seed=config["seed"],
            train=dataclasses.replace(
                train,
                lr=float(train.lr),
                betas=(float(betas[0]), float(betas[1])),
                weight_decay=float(train.weight_decay),
                min_lr_ratio=float(train.min_lr_ratio),
                max_grad_norm=float(norm) if norm else None,
            ),
            eval=_typed(EvalSettings, config["eval"]),
            run=_typed(RunSettings, config["run"]),
        )


def _typed(cls: type[_T], values: dict[str, Any]) -> _T:
    """``cls`` from the keys of ``values`` that are its fields."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    """The per-key checks of :meth:`Settings.from_config`; an option's name carries where it came from."""

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
            raise ConfigError(
                f"{self.name(key)} must be a non-empty string{' or null' if none_ok else ''}, got {value!r}"
            )


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
        raise ConfigError(
            f"{option} must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}; {here}"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} is {value!r}, but torch finds no CUDA GPU on this machine; {here}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"{option} is {value!r}, but this machine has {torch.cuda.device_count()} CUDA GPU(s); {here}"
            )
    elif device.type == "mps" and "mps" not in available:
        raise ConfigError(f"{option} is {value!r}, but the MPS backend (Apple GPUs) is not available here; {here}")
