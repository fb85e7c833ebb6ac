"""The hooks a plugin implements (mark implementations with :data:`rlsdk.hookimpl`).

Registration hooks are called once when the plugin manager is built, each with a ``register``
callback: ``register(name, factory)``. There is one per kind of :data:`rlsdk.kinds.KINDS`
(``register_losses``, ``register_samplers`` ...), defined from that table. The factory is called
with the keyword arguments of the component's config section and returns the component. Names are
unique per kind across all plugins.

The check hook (``check_config``) is called when a config is loaded; it raises
:class:`rlsdk.ConfigError` or returns nothing.

Event hooks are called by the trainer with a :class:`~rlsdk.types.RunContext` and return nothing.

An implementation may accept any subset of a hook's arguments (pluggy matches them by name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from rlsdk.kinds import KINDS, Kind

if TYPE_CHECKING:
    from rlsdk.types import RunContext

hookspec = pluggy.HookspecMarker("rlsdk")
hookimpl = pluggy.HookimplMarker("rlsdk")

Register = Callable[[str, Callable[..., Any]], None]
"""``register(name, factory)``: the callback every registration hook receives."""


def _registration_hook(spec: Kind) -> Callable[..., None]:
    """The hook spec ``register_<kinds>(register)`` of one kind of :data:`rlsdk.kinds.KINDS`."""

    def hook(register: Register) -> None:
        pass

    noun = spec.name.replace("_", "")
    hook.__name__ = hook.__qualname__ = spec.hook
    hook.__doc__ = f"""Register {spec.plural} (kind ``{spec.name}``).

    {spec.summary}

    Args:
        register: Call ``register("name", factory)`` once per component; the factory is called with
            the options of the config section ``{spec.section}``.

    Example::

        @rlsdk.hookimpl
        def {spec.hook}(register):
            register("my_{noun}", My{noun.capitalize()})
    """
    return hookspec(hook)


for _spec in KINDS.values():
    globals()[_spec.hook] = _registration_hook(_spec)
del _spec


@hookspec
def check_config(config: dict[str, Any]) -> None:
    """Check the settings that involve your components together; raise :class:`rlsdk.ConfigError`.

    Called by :func:`rlsdk.config.load_config` (through :func:`~rlsdk.config.validate_config`) once
    the config is resolved and every key has passed its own check, before anything is built: the
    place for a rule that one component's constructor cannot see, such as "a group-normalised
    advantage needs ``sampler.n >= 2``", "the completion fits the policy's ``max_len``" or "the
    policy fits in memory". Check only the sections that name your components (a section's keys
    other than ``name`` may be missing: the factory's defaults apply) and return None when all is
    well. Any other exception is reported as a ConfigError naming your plugin.

    Args:
        config: The resolved config (a copy; changing it changes nothing).

    Example::

        @rlsdk.hookimpl
        def check_config(config):
            n = config["sampler"].get("n")
            if config["advantage"]["name"] == "my_adv" and isinstance(n, int) and n < 2:
                raise rlsdk.ConfigError(f"advantage 'my_adv' compares the completions of a prompt; "
                                        f"sampler.n={n} gives one; set sampler.n >= 2")
    """


@hookspec
def on_train_start(run: RunContext) -> None:
    """Called once before the first training step (also after a resume).

    Args:
        run: The running run (:class:`rlsdk.types.RunContext`: config, step, history, policy, path).
    """


@hookspec
def on_step_end(run: RunContext, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimiser step, once its metrics are written.

    Args:
        run: The running :class:`rlsdk.types.RunContext`.
        step: The step just finished (1-based).
        metrics: The step's metrics (a plugin may read them; changes are not written back).
    """


@hookspec
def on_train_end(run: RunContext, summary: dict[str, Any]) -> None:
    """Called once after the last step.

    Args:
        run: The finished :class:`rlsdk.types.RunContext`.
        summary: Final metrics and the paths of the run's files.
    """
