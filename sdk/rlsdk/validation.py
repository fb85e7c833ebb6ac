"""Checks for component options: each returns the valid value or raises :class:`rlsdk.ConfigError`.

Plugins call them in their constructors with the option's full name, e.g.
``check_number(eps, "advantage.eps", low=0.0, low_open=True)``. Every message names the option, shows
the bad value (its ``repr``) and says what is valid. A bool is never accepted as an int or a number
(``True`` is an ``int`` in Python, but ``eps: true`` in a config is a mistake), and numbers must be
finite: NaN and +-inf are always rejected (no option needs them; use ``none_ok`` for "disabled").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, overload

from rlsdk.errors import ConfigError, did_you_mean

__all__ = ["check_bool", "check_int", "check_number", "check_choice", "check_memory", "check_logprob_inputs"]


def _show(bound: float) -> str:
    """``bound`` as short as it reads exactly: ``0`` for 0.0, ``1e-06``, but ``0.1234567`` in full."""
    short = f"{bound:g}"
    return short if float(short) == bound else repr(bound)


def _bounds(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """``" >= 0 and <= 1"``-style text for the bounds that are set ('' if none)."""
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {_show(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {_show(high)}")
    return " " + " and ".join(parts) if parts else ""


def check_bool(value: Any, option: str) -> bool:
    """Return ``value`` if it is a bool.

    Args:
        value: What the user passed.
        option: The option's full name, shown in the message (e.g. ``"advantage.norm_std"``).

    Returns:
        ``value``.

    Raises:
        ConfigError: ``value`` is not ``True`` or ``False`` (``0``, ``1`` and ``"yes"`` are rejected).

    Example:
        >>> check_bool(True, "advantage.norm_std")
        True
        >>> check_bool("yes", "advantage.norm_std")
        Traceback (most recent call last):
        ...
        rlsdk.errors.ConfigError: advantage.norm_std must be true or false, got 'yes'
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{option} must be true or false, got {value!r}")
    return value


def check_int(value: Any, option: str, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` if it is an int within the bounds that are not None.

    Args:
        value: What the user passed.
        option: The option's full name, shown in the message (e.g. ``"task.digits"``).
        low: Smallest valid value.
        high: Largest valid value.

    Returns:
        ``value``.

    Raises:
        ConfigError: ``value`` is not an int (a bool or ``2.0`` is not), or is out of bounds.

    Example:
        >>> check_int(3, "task.digits", low=1)
        3
        >>> check_int(2.5, "task.digits", low=1)
        Traceback (most recent call last):
        ...
        rlsdk.errors.ConfigError: task.digits must be an integer >= 1, got 2.5
    """
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{option} must be an integer{_bounds(low, high)}, got {value!r}")
    return value


# The result is a float unless ``none_ok=True`` is passed (two signatures for type checkers only).
@overload
def check_number(
    value: Any,
    option: str,
    low: float | None = ...,
    high: float | None = ...,
    *,
    low_open: bool = ...,
    high_open: bool = ...,
    none_ok: Literal[False] = ...,
) -> float: ...
@overload
def check_number(
    value: Any,
    option: str,
    low: float | None = ...,
    high: float | None = ...,
    *,
    low_open: bool = ...,
    high_open: bool = ...,
    none_ok: bool,
) -> float | None: ...
def check_number(
    value: Any,
    option: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    none_ok: bool = False,
) -> float | None:
    """Return ``value`` as a float if it is a finite number within the bounds that are not None.

    Args:
        value: What the user passed (an int or a float; NaN and +-inf are never valid).
        option: The option's full name, shown in the message (e.g. ``"loss.eps_low"``).
        low: Smallest valid value.
        high: Largest valid value.
        low_open: ``value`` must be strictly greater than ``low``.
        high_open: ``value`` must be strictly less than ``high``.
        none_ok: None is valid too (it usually disables a feature) and is returned as is.

    Returns:
        ``float(value)``, or None if ``value`` is None and ``none_ok``.

    Raises:
        ConfigError: ``value`` is not a finite int or float (a bool is not), or is out of bounds.

    Example:
        >>> check_number(1, "advantage.gamma", low=0.0, high=1.0)
        1.0
        >>> check_number(0.0, "advantage.eps", low=0.0, low_open=True)
        Traceback (most recent call last):
        ...
        rlsdk.errors.ConfigError: advantage.eps must be a finite number > 0, got 0.0
    """
    if value is None and none_ok:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        rule = f"a finite number{_bounds(low, high, low_open, high_open)}" + (" or None" if none_ok else "")
        raise ConfigError(f"{option} must be {rule}, got {value!r}")
    return float(value)


def check_choice(value: Any, option: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Args:
        value: What the user passed.
        option: The option's full name, shown in the message (e.g. ``"loss.agg"``).
        choices: The valid values, listed in this order in the message.

    Returns:
        ``value``.

    Raises:
        ConfigError: ``value`` is not in ``choices``; the message suggests the closest choice, if any.

    Example:
        >>> check_choice("k3", "loss.kl_estimator", ("k1", "k2", "k3"))
        'k3'
        >>> check_choice("zeros", "advantage.mode", ("reward", "zero"))
        Traceback (most recent call last):
        ...
        rlsdk.errors.ConfigError: advantage.mode must be one of 'reward', 'zero', got 'zeros' (did you mean 'zero'?)
    """
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{option} must be one of {valid}, got {value!r}{did_you_mean(str(value), choices)}")
    return value


def _format_bytes(n: float) -> str:
    """``n`` bytes readably in binary units: ``512 B``, ``1.5 GiB``, ``218 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            break
        n /= 1024
    return f"{n:.1f} {unit}" if n < 10 and unit != "B" else f"{n:.0f} {unit}"


def _device_memory(device: Any) -> tuple[int, str] | None:
    """``(total bytes, "this machine" or "cuda:0 (name)")`` of ``device``, or None when unknown."""
    import os

    kind = str(device).split(":")[0]
    if kind in ("cpu", "mps"):  # an Apple GPU shares the machine's memory
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine"
        except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
            return None
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None
        dev = torch.device(device)
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return int(props.total_memory), f"cuda:{index} ({props.name})"
    return None


def check_memory(nbytes: float, what: str, device: Any = "cpu", hint: str = "") -> None:
    """Raise :class:`ConfigError` if ``nbytes`` exceed the total memory of ``device``.

    A rough check before anything is allocated: a config whose model cannot fit fails at once with
    sizes in the message instead of swapping or being killed minutes later. Where the total is
    unknown (a device type other than cpu, mps and cuda, or no ``os.sysconf``) nothing is checked.

    Args:
        nbytes: The estimated need, in bytes.
        what: What needs it, the start of the message (e.g. ``"policy (tiny) with d_model=4096, n_layers=32
            (parameters, gradients and Adam state)"``).
        device: The torch device (or its name) the memory is on; ``cpu`` and ``mps`` use the machine's
            physical memory, ``cuda:i`` the GPU's.
        hint: How to fix it, appended to the message.

    Raises:
        ConfigError: ``"{what} needs about 218 TiB; this machine has 24 GiB; {hint}"``.

    Example:
        >>> check_memory(1024, "a kibibyte", "cpu")
        >>> try:
        ...     check_memory(2**70, "a zebibyte", "cpu", hint="buy more")
        ... except ConfigError as exc:
        ...     print(str(exc).replace(str(exc).split("; ")[1], "this machine has <its memory>"))
        a zebibyte needs about 1048576 PiB; this machine has <its memory>; buy more
    """
    found = _device_memory(device)
    if found is None:
        return
    total, place = found
    if nbytes > total:
        raise ConfigError(
            f"{what} needs about {_format_bytes(nbytes)}; {place} has {_format_bytes(total)}"
            + (f"; {hint}" if hint else "")
        )


def check_logprob_inputs(
    hidden: Any,
    weight: Any,
    targets: Any,
    temperature: float,
    *,
    ignore_index: int | None = None,
    vocab: int | None = None,
    backend: str = "logprob backend",
) -> None:
    """Check the arguments of a logprob backend call; raise ``ValueError`` naming what is wrong.

    ``hidden [N, H]`` and ``weight [V, H]`` floating point on one device, ``targets [N]`` integer ids in
    ``[0, V)`` (or equal to ``ignore_index`` when given), ``temperature`` a finite number > 0.
    ``vocab`` overrides ``V`` for the targets' range (a weight that is one shard of the vocabulary).
    Call it at the top of a backend's ``__call__`` with the backend's name for the messages.
    """
    import torch

    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{backend}: expected hidden [N, H] and weight [V, H]; "
            f"got hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)}"
        )
    if not (hidden.is_floating_point() and weight.is_floating_point()):
        raise ValueError(f"{backend}: hidden and weight must be floating point; got {hidden.dtype}, {weight.dtype}")
    if not hidden.device == weight.device == targets.device:
        raise ValueError(
            f"{backend}: hidden, weight and targets must share a device; "
            f"got {hidden.device}, {weight.device}, {targets.device}"
        )
    if targets.shape != (hidden.shape[0],) or targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"{backend}: expected targets [N={hidden.shape[0]}] of integer ids; "
            f"got {tuple(targets.shape)} {targets.dtype}"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise ValueError(f"{backend}: temperature must be a finite number > 0; got {temperature!r}")
    if weight.shape[0] == 0:
        raise ValueError(f"{backend}: weight has an empty vocabulary (V = 0)")
    vocab = weight.shape[0] if vocab is None else vocab
    bad = (targets < 0) | (targets >= vocab)
    if ignore_index is not None:
        bad &= targets != ignore_index
    if targets.numel() and bool(bad.any()):
        allowed = f"[0, {vocab})" + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else "")
        raise ValueError(f"{backend}: target ids must lie in {allowed}; got {int(targets[bad][0])}")
