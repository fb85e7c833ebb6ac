"""The table of component kinds: the one place a kind is defined.

Each :class:`Kind` names its registration hook, its protocol in ``rlsdk.types``, the shape of its
config section, the members the trainer reads (required, or optional with the default its protocol
declares), its conformance check in :mod:`rlsdk.testing` and its one-line description. The hook specs
(:mod:`rlsdk.hookspecs`), the registry (:mod:`rlsdk.plugins`), config validation
(:mod:`rlsdk.config`), the plugin template (:mod:`rlsdk.scaffold`), ``rlsdk plugins`` and the hook
reference in the docs are derived from :data:`KINDS`: a new kind is one entry here (and its protocol).

The core reads a component's members through :func:`member` and checks them once, when the
component is built, with :func:`conform`, so a sampler without ``params`` or a loss whose
``needs_entropy`` is not a bool fails then, naming the component and its plugin.

This module imports neither torch nor any component: ``import rlsdk`` stays cheap.
"""

from __future__ import annotations

import importlib
import inspect
import types
from dataclasses import dataclass
from typing import Any, Literal

from rlsdk.errors import ComponentError, did_you_mean

__all__ = ["Kind", "KINDS", "SHAPES", "kind", "protocol", "member", "conform"]

#: The shapes of a kind's config section:
#:
#: - ``named``: a mapping whose ``name`` selects the component; the other keys are its options
#:   (``loss: {name: clipped_pg, eps_high: 0.28}``).
#: - ``backend``: the same with the key ``backend`` instead of ``name``, and ``auto`` for "choose
#:   by device" (``logprob: {backend: auto}``).
#: - ``weighted``: component name -> ``{weight: w, **options}`` or just the weight; several at once
#:   (``rewards: {exact_match: 1.0}``).
#: - ``enabled``: component name -> its options or null; several at once (``trackers: {jsonl: {}}``).
#: - ``preset``: the name of a preset (``algorithm: grpo``); no options.
SHAPES = ("named", "backend", "weighted", "enabled", "preset")


@dataclass(frozen=True)
class Kind:
    """One component kind.

    Attributes:
        name: The kind, as ``rlsdk.create(kind, ...)`` and messages spell it (``"loss"``).
        hook: The registration hook (``"register_losses"``).
        plural: What the hook registers, for docs (``"policy losses"``).
        summary: One line on what the component does and how it is called.
        section: The config key that selects it (``"loss"``, ``"logprob"``, ``"rewards"``).
        shape: The shape of that section, one of :data:`SHAPES`.
        protocol: Its protocol's name in ``rlsdk.types``, or None (presets have none).
        required: Members every component of the kind must have (beyond ``__call__``).
        optional: Members with a default declared on the protocol.
        check: The conformance check in :mod:`rlsdk.testing`, or None.
        build_to_validate: Building it is cheap and has no side effects, so :func:`rlsdk.config.load_config`
            builds it (and drops it) to run the checks of its factory: a bad option fails when the config
            is loaded, not when training starts.
        scaffold: ``rlsdk new-plugin`` can include an example of it.
    """

    name: str
    hook: str
    plural: str
    summary: str
    section: str
    shape: Literal["named", "backend", "weighted", "enabled", "preset"]
    protocol: str | None = None
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    check: str | None = None
    build_to_validate: bool = False
    scaffold: bool = False


#: Every component kind, by name, in the order the docs and ``rlsdk plugins`` list them.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "loss", "register_losses", "policy losses",
            "``loss(logprobs [B, T], batch: TrainBatch) -> LossOutput``, normalised by the batch's global counts.",
            section="loss", shape="named", protocol="Loss", optional=("needs_ref_logprobs", "needs_entropy"),
            check="check_loss", build_to_validate=True, scaffold=True,
        ),
        Kind(
            "advantage", "register_advantages", "advantage estimators",
            "``estimator(batch: RolloutBatch) -> Tensor [B, T]``, zero where the mask is 0.",
            section="advantage", shape="named", protocol="AdvantageEstimator", optional=("needs_ref_logprobs",),
            check="check_advantage", build_to_validate=True, scaffold=True,
        ),
        Kind(
            "sampler", "register_samplers", "samplers",
            "``sampler(engine, examples, score, generator, params) -> RolloutBatch``: completions from a "
            "generation engine, scored.",
            section="sampler", shape="named", protocol="Sampler", required=("params",), optional=("eval_params",),
            check="check_sampler", build_to_validate=True, scaffold=True,
        ),
        Kind(
            "engine", "register_engines", "generation engines",
            "``engine.generate(prompt_ids, params, generator) -> Generation``; the trainer gives it new "
            "weights with ``engine.update_weights(policy, version)``.",
            section="engine", shape="named", protocol="GenerationEngine",
            required=("tokenizer", "update_weights", "generate"), check="check_engine",
        ),
        Kind(
            "reward", "register_rewards", "rewards",
            "``reward(prompts, completions, metadata) -> list[float]``; the config's ``rewards`` section "
            "combines them as a weighted sum.",
            section="rewards", shape="weighted", protocol="Reward", check="check_reward", scaffold=True,
        ),
        Kind(
            "algorithm", "register_algorithms", "algorithms",
            "Named presets: the factory takes no arguments and returns config sections (``loss``, "
            "``advantage``, ``sampler``, ``rewards``, ``logprob``, ``train``) stating every option of the algorithm.",
            section="algorithm", shape="preset",
        ),
        Kind(
            "task", "register_tasks", "tasks",
            "Sources of prompts with verifiable answers: ``task.sample(n, generator)``, ``task.eval_examples()``.",
            section="task", shape="named", protocol="Task", optional=("files",), check="check_task",
        ),
        Kind(
            "policy", "register_policies", "policies",
            "Language models the trainer optimises (``nn.Module`` with ``hidden_states``, ``output_weight``, "
            "``decode_step``).",
            section="policy", shape="named", protocol="Policy",
            required=("tokenizer", "hidden_states", "output_weight"), optional=("check_prompts",),
        ),
        Kind(
            "logprob_backend", "register_logprob_backends", "logprob backends",
            "``backend(hidden [N, H], weight [V, H], targets [N], *, temperature, with_entropy) -> LogprobOutput``; "
            "``auto`` picks the highest ``priority`` among those that ``supports(device)``.",
            section="logprob", shape="backend", protocol="LogprobBackend",
            optional=("priority", "supports", "loss_from_hidden"), check="check_logprob_backend",
            build_to_validate=True,
        ),
        Kind(
            "tracker", "register_trackers", "experiment trackers",
            "``tracker.log_config(config)``, ``log_metrics(metrics, step)``, ``close()``; enabled under the "
            "config's ``trackers``.",
            section="trackers", shape="enabled", protocol="Tracker", required=("log_config", "log_metrics", "close"),
        ),
    )
}  # fmt: skip


def kind(name: str) -> Kind:
    """The :class:`Kind` called ``name``; a :class:`~rlsdk.errors.ConfigError` lists the valid ones."""
    from rlsdk.errors import ConfigError

    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown component kind {name!r}{did_you_mean(str(name), KINDS)}; valid kinds: {', '.join(KINDS)}"
        ) from None


def protocol(name: str) -> type | None:
    """The protocol class of kind ``name`` (imports ``rlsdk.types``, and so torch)."""
    spec = kind(name)
    return getattr(importlib.import_module("rlsdk.types"), spec.protocol) if spec.protocol else None


_MISSING = object()


def _default(name: str, component: Any, attribute: str) -> Any:
    """The default the protocol of kind ``name`` declares for ``attribute``, bound to ``component``."""
    value = inspect.getattr_static(protocol(name), attribute)
    return types.MethodType(value, component) if inspect.isfunction(value) else value


def member(name: str, component: Any, attribute: str) -> Any:
    """``component.attribute``, or the default its protocol declares for an optional member.

    Args:
        name: The component's kind (``"loss"``).
        component: The component.
        attribute: A member of the kind (``"needs_entropy"``), required or optional.

    Raises:
        KeyError: ``attribute`` is not a member of the kind (a bug in the caller).
    """
    spec = kind(name)
    if attribute not in spec.required and attribute not in spec.optional:
        raise KeyError(f"{attribute!r} is not a member of kind {name!r}")
    value = getattr(component, attribute, _MISSING)
    if value is _MISSING and attribute in spec.optional:
        return _default(name, component, attribute)
    return value


def _expected(name: str, attribute: str) -> tuple[str, Any]:
    """``(description, test)`` of what member ``attribute`` of kind ``name`` must be."""
    proto = protocol(name)
    if proto is None:
        return "an attribute", lambda value: True
    declared = inspect.getattr_static(proto, attribute, None)
    if inspect.isfunction(declared) or isinstance(declared, property):
        if isinstance(declared, property):
            return "an attribute", lambda value: True
        return "a method", callable
    annotation = str(inspect.get_annotations(proto).get(attribute, ""))
    if annotation == "bool":
        return "True or False", lambda value: isinstance(value, bool)
    if annotation == "int":
        return "an integer", lambda value: isinstance(value, int) and not isinstance(value, bool)
    if annotation.startswith("Sequence"):
        return "a list of paths", lambda value: isinstance(value, (list, tuple))
    if annotation == "SamplingParams":
        from rlsdk.types import SamplingParams

        return "an rlsdk.SamplingParams", lambda value: isinstance(value, SamplingParams)
    return "an attribute", lambda value: True


def conform(name: str, component: Any, label: str) -> Any:
    """Check ``component`` against the members of kind ``name``; return it unchanged.

    A required member that is missing, a member of the wrong type (``needs_entropy`` that is not a
    bool, ``params`` that is not a :class:`~rlsdk.types.SamplingParams`), or an attribute
    ``needs_*`` that no protocol declares (a misspelt capability, which would otherwise be ignored)
    is a :class:`~rlsdk.errors.ComponentError` naming the component.

    Args:
        name: The kind.
        component: A built component.
        label: How messages name it (``loss 'x' (plugin p)``).
    """
    spec = kind(name)
    public = [a for a in dir(component) if not a.startswith("_")]
    for attribute in spec.required:
        # without running a property (an engine's tokenizer may need update_weights first)
        if inspect.getattr_static(component, attribute, _MISSING) is _MISSING:
            raise ComponentError(
                f"{label} has no {attribute!r}, which the {spec.protocol} protocol requires"
                f"{did_you_mean(attribute, public)} (see rlsdk.{spec.protocol})"
            )
    for attribute in (*spec.required, *spec.optional):
        static = inspect.getattr_static(component, attribute, _MISSING)
        if static is _MISSING or isinstance(static, property):
            continue
        what, test = _expected(name, attribute)
        value = getattr(component, attribute)
        if not test(value):
            raise ComponentError(f"{label}: {attribute} must be {what} (rlsdk.{spec.protocol}), got {value!r}")
    known = [a for a in spec.optional if a.startswith("needs_")]
    for attribute in public:
        if attribute.startswith("needs_") and attribute not in known:
            valid = f"a {name} may declare: {', '.join(known)}" if known else f"a {name} declares none"
            raise ComponentError(
                f"{label} declares {attribute!r}, which rlsdk never reads{did_you_mean(attribute, known)}; {valid}"
            )
    return component
