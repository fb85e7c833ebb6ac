"""Exceptions raised by rlsdk. Each message names the bad value, where it came from and what is valid."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["RlsdkError", "ConfigError", "PluginError", "did_you_mean"]


class RlsdkError(Exception):
    """Base class of rlsdk's errors."""


class ConfigError(RlsdkError, ValueError):
    """A config value, override, file or data row is invalid."""


class PluginError(RlsdkError):
    """A plugin failed to load or to register, or two plugins registered the same name."""


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
