"""The hooks a plugin implements (mark implementations with :data:`rlsdk.hookimpl`).

Registration hooks are called once when the plugin manager is built, each with a ``register``
callback: ``register(name, factory)``. The factory is called with the keyword arguments of the
component's config section and returns the component. Names are unique per kind across all plugins.

The check hook (``check_config``) is called when a config is loaded; it raises
:class:`rlsdk.ConfigError` or returns nothing.

Event hooks are called by the trainer and return nothing.

An implementation may accept any subset of a hook's arguments (pluggy matches them by name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    from rlsdk.trainer import Run

hookspec = pluggy.HookspecMarker("rlsdk")
hookimpl = pluggy.HookimplMarker("rlsdk")

Register = Callable[[str, Callable[..., Any]], None]
"""``register(name, factory)``: the callback every registration hook receives."""


@hookspec
def register_losses(register: Register) -> None:
    """Register policy losses (kind ``loss``).

    A loss is called as ``loss(logprobs [B, T], batch: TrainBatch) -> LossOutput``.

    Args:
        register: Call ``register("name", factory)`` once per loss.

    Example::

        @rlsdk.hookimpl
        def register_losses(register):
            register("my_loss", MyLoss)
    """


@hookspec
def register_advantages(register: Register) -> None:
    """Register advantage estimators (kind ``advantage``).

    An estimator is called as ``estimator(batch: RolloutBatch) -> Tensor [B, T]``.

    Args:
        register: Call ``register("name", factory)`` once per estimator.
    """


@hookspec
def register_samplers(register: Register) -> None:
    """Register samplers (kind ``sampler``).

    A sampler is called as ``sampler(policy, examples, score, generator) -> RolloutBatch``.

    Args:
        register: Call ``register("name", factory)`` once per sampler.
    """


@hookspec
def register_rewards(register: Register) -> None:
    """Register rewards (kind ``reward``).

    A reward is called as ``reward(prompts, completions, metadata) -> list[float]``; the config's
    ``rewards`` section combines them as a weighted sum.

    Args:
        register: Call ``register("name", factory)`` once per reward.
    """


@hookspec
def register_algorithms(register: Register) -> None:
    """Register algorithms (kind ``algorithm``): named presets of components and their defaults.

    The factory takes no arguments and returns a dict with any of the config sections ``loss``,
    ``advantage``, ``sampler``, ``rewards``, ``logprob`` and ``train``; each section names its
    component with ``name`` and gives its options.

    Args:
        register: Call ``register("name", factory)`` once per algorithm.
    """


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks (kind ``task``): sources of prompts with verifiable answers.

    Args:
        register: Call ``register("name", factory)`` once per task.
    """


@hookspec
def register_policies(register: Register) -> None:
    """Register policies (kind ``policy``): language models the trainer can optimise.

    Args:
        register: Call ``register("name", factory)`` once per policy.
    """


@hookspec
def register_logprob_backends(register: Register) -> None:
    """Register logprob backends (kind ``logprob_backend``).

    A backend computes per-token log-probabilities (and entropy) from hidden states and the output
    weight. ``auto`` picks, among those whose ``supports(device)`` is true, the highest ``priority``.

    Args:
        register: Call ``register("name", factory)`` once per backend.
    """


@hookspec
def register_trackers(register: Register) -> None:
    """Register experiment trackers (kind ``tracker``), enabled under the config's ``trackers``.

    Args:
        register: Call ``register("name", factory)`` once per tracker.
    """


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
def on_train_start(run: Run) -> None:
    """Called once before the first training step (also after a resume).

    Args:
        run: The running :class:`rlsdk.trainer.Run` (config, run directory, components, step).
    """


@hookspec
def on_step_end(run: Run, step: int, metrics: dict[str, float]) -> None:
    """Called after every optimiser step, once its metrics are written.

    Args:
        run: The running :class:`rlsdk.trainer.Run`.
        step: The step just finished (1-based).
        metrics: The step's metrics (a plugin may read them; changes are not written back).
    """


@hookspec
def on_train_end(run: Run, summary: dict[str, Any]) -> None:
    """Called once after the last step.

    Args:
        run: The finished :class:`rlsdk.trainer.Run`.
        summary: Final metrics and the paths of the run's files.
    """
