"""Exceptions raised by rlsdk. Each message names the bad value, where it came from and what is valid."""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = [
    "RlsdkError",
    "ConfigError",
    "PluginError",
    "ComponentError",
    "StorageError",
    "FolderLocked",
    "Interrupted",
    "did_you_mean",
    "guard",
]


class RlsdkError(Exception):
    """Base class of rlsdk's errors."""


class ConfigError(RlsdkError, ValueError):
    """A config value, override, file or data row is invalid."""


class PluginError(RlsdkError):
    """A plugin failed to load or to register, or two plugins registered the same name."""


class ComponentError(RlsdkError):
    """A component (a plugin's loss, reward, sampler ...) raised, or returned what its contract forbids.

    The message names the component, the plugin that registered it, and what the contract expects.
    """


class StorageError(RlsdkError):
    """A file could not be written or read (a full disk, a read-only folder, a path that is a file)."""


class FolderLocked(RlsdkError):
    """A run or experiment folder is in use by another process (the message names its pid)."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM, after saving a checkpoint that resumes exactly.

    A ``KeyboardInterrupt``, so code that catches Ctrl-C catches this too.

    Attributes:
        signum: The signal's number (``signal.SIGINT`` or ``signal.SIGTERM``).
        checkpoint: The checkpoint written on the way out, or None (a second signal stops at once).
        run_dir: The run folder, if the run had written one (``rlsdk train --resume`` continues it).
    """

    def __init__(self, signum: int, checkpoint: str | None = None, run_dir: str | None = None):
        self.signum = signum
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        """128 plus the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports it."""
        return 128 + int(self.signum)


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


@contextmanager
def guard(component: str, call: str) -> Iterator[None]:
    """Turn an exception raised by ``component`` during ``call`` into a one-line :class:`ComponentError`.

    rlsdk's own errors (a plugin may raise :class:`~rlsdk.errors.ConfigError` on purpose) pass
    unchanged, and so do ``KeyboardInterrupt`` and ``SystemExit``.

    Args:
        component: Its label, e.g. ``"reward 'char_match' (plugin rlsdk:rewards)"``.
        call: What was called, e.g. ``"reward(prompts, completions, metadata)"``.
    """
    try:
        yield
    except RlsdkError:
        raise
    except Exception as exc:  # noqa: BLE001 - the component's own failure, reported as such
        raise ComponentError(f"{component} raised {type(exc).__name__} in {call}: {exc}") from exc
