"""rlsdk: a plugin-based SDK for RL post-training of language models.

The public API is the list below; everything else is private.
"""

from rlsdk.errors import ConfigError, PluginError, RlsdkError
from rlsdk.functional import aggregate, group_stats, kl_estimate, masked_mean, masked_whiten
from rlsdk.hookspecs import hookimpl
from rlsdk.plugins import create, get_registry
from rlsdk.types import (
    AdvantageEstimator,
    DecodeOutput,
    Example,
    LogprobBackend,
    LogprobOutput,
    Loss,
    LossOutput,
    Policy,
    Reward,
    RolloutBatch,
    Sampler,
    ScoreFn,
    Task,
    Tokenizer,
    Tracker,
    TrainBatch,
)

__version__ = "0.1.0"

__all__ = [
    "hookimpl",
    "create",
    "get_registry",
    "aggregate",
    "group_stats",
    "kl_estimate",
    "masked_mean",
    "masked_whiten",
    "Example",
    "RolloutBatch",
    "TrainBatch",
    "LossOutput",
    "LogprobOutput",
    "DecodeOutput",
    "Tokenizer",
    "Loss",
    "AdvantageEstimator",
    "Reward",
    "Sampler",
    "ScoreFn",
    "Task",
    "Policy",
    "LogprobBackend",
    "Tracker",
    "RlsdkError",
    "ConfigError",
    "PluginError",
]
