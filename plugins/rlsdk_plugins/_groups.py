"""Config checks shared by the estimators that need groups of completions per prompt.

``grpo``, ``grpo_passk``, ``rloo`` and ``opo`` compare each completion with the others of its
prompt's group (``sampler.n`` completions per prompt); with groups of one that comparison is
empty. Their ``check_config`` hooks call :func:`require_groups`. Private to ``rlsdk_plugins``: an
outside plugin writes its own check (it is a few lines) or copies this one.
"""

from __future__ import annotations

from typing import Any

from rlsdk import ConfigError

__all__ = ["group_size", "require_groups"]


def group_size(config: dict[str, Any]) -> int | None:
    """``sampler.n`` if the config sets it to an int >= 1, else None (the sampler reports other values)."""
    n = (config.get("sampler") or {}).get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def require_groups(
    config: dict[str, Any], advantage: str, uses: str, single: str = "R, no baseline", fix: str = ""
) -> None:
    """Raise :class:`~rlsdk.errors.ConfigError` when ``advantage.name == advantage`` and ``sampler.n`` is 1.

    Args:
        config: The resolved config (a ``check_config`` hook's argument).
        advantage: The estimator's registered name.
        uses: What it takes from a prompt's group, for the message ("subtracts the group's mean reward").
        single: What every advantage becomes with groups of one, for the message.
        fix: Another way out, appended to "set sampler.n >= 2".
    """
    n = group_size(config)
    if (config.get("advantage") or {}).get("name") == advantage and n is not None and n < 2:
        raise ConfigError(
            f"advantage {advantage!r} {uses}, but sampler.n={n} gives groups of one (every advantage is then "
            f"{single}); set sampler.n >= 2{fix}"
        )
