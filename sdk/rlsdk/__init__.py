"""rlsdk: a plugin-based SDK for RL post-training of language models.

The public API is the list below; everything else is private. Names that need torch (the batch
types, protocols and tensor functions) are imported on first use, so ``import rlsdk`` (which pytest
does for every session through the ``rlsdk.testing`` plugin) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlsdk._version import __version__ as __version__
from rlsdk.errors import ComponentError, ConfigError, FolderLocked, Interrupted, PluginError, RlsdkError, StorageError
from rlsdk.hookspecs import hookimpl
from rlsdk.plugins import create, get_registry

_LAZY = {
    **dict.fromkeys(["aggregate", "group_stats", "kl_estimate", "masked_mean", "masked_whiten"], "rlsdk.functional"),
    **dict.fromkeys(
        [
            "Example",
            "RolloutBatch",
            "TrainBatch",
            "LossOutput",
            "LogprobOutput",
            "DecodeOutput",
            "HiddenLossOutput",
            "SamplingParams",
            "Generation",
            "Tokenizer",
            "Loss",
            "AdvantageEstimator",
            "Reward",
            "Sampler",
            "GenerationEngine",
            "ScoreFn",
            "Task",
            "Policy",
            "LogprobBackend",
            "Tracker",
            "RunContext",
        ],  # fmt: skip
        "rlsdk.types",
    ),
}

__all__ = [
    "hookimpl",
    "create",
    "get_registry",
    *_LAZY,
    "RlsdkError",
    "ConfigError",
    "PluginError",
    "ComponentError",
    "StorageError",
    "FolderLocked",
    "Interrupted",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rlsdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
