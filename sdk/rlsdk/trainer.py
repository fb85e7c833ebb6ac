"""The training loop. It knows components only through their protocols: no algorithm names here.

One step::

    examples  = task.sample(prompts_per_step, data generator)
    rollout   = sampler(engine, examples, score, sampling generator, sampler.params)   # generate + rewards
    rollout.old_logprobs, rollout.ref_logprobs = logprob backend on policy / reference (no grad)
    advantages = advantage(rollout)
    for epoch, mini-batch (one optimiser step each), micro-batch (gradient accumulation):
        logprobs, entropy = logprob backend on policy (with grad)
        loss(logprobs, micro_batch).loss.backward()                       # global counts: split-invariant
        (the backend's ``loss_from_hidden`` may fuse the two: micro_batch_loss)
    clip grad norm, optimiser step, engine.update_weights(policy, step), write metrics, checkpoint

Components are known by their kinds (:mod:`rlsdk.kinds`): each is checked against its protocol's
members when built (:func:`rlsdk.kinds.conform`), and optional members are read with their declared
defaults (:func:`rlsdk.kinds.member`).

The output layer sees trained tokens only (``mask > 0``, :func:`trained_logprobs`); loss metrics
stay on the device until the optimiser step.

Everything random comes from named streams of one root seed (:class:`rlsdk.provenance.seeds.SeedTree`),
and checkpoints carry the generators' states, so a resumed run repeats the uninterrupted one exactly
on the CPU.

What each component returns is checked against its contract (:mod:`rlsdk.checks`); a component that
raises or returns something else stops the run with a :class:`~rlsdk.errors.ComponentError` naming it
and its plugin. A non-finite loss or gradient stops it before the optimiser step, so the last
checkpoint stays the last good state. SIGINT and SIGTERM let the current step finish, write a
checkpoint and raise :class:`~rlsdk.errors.Interrupted`; a second signal stops at once, keeping the
previous checkpoint. The run folder is locked while :func:`train` writes it.
"""

from __future__ import annotations

import copy
import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import torch
from torch import Tensor

from rlsdk.checks import check_advantages, check_examples, check_loss_output, check_rewards, check_rollout
from rlsdk.config import dump_yaml, load_config, load_yaml, reward_specs, validate_config
from rlsdk.errors import ComponentError, ConfigError, Interrupted, RlsdkError, StorageError, guard
from rlsdk.functional import aggregate, kl_estimate, masked_mean
from rlsdk.kinds import member
from rlsdk.plugins import Registry
from rlsdk.progress import TrainProgress
from rlsdk.provenance.manifest import build_manifest
from rlsdk.provenance.rundir import RunDir, atomic_write_text, read_metrics
from rlsdk.provenance.seeds import SeedTree
from rlsdk.settings import Settings, TrainSettings
from rlsdk.types import (
    AdvantageEstimator,
    Example,
    GenerationEngine,
    LogprobBackend,
    Loss,
    LossOutput,
    Policy,
    RolloutBatch,
    Sampler,
    Task,
    TrainBatch,
)

__all__ = [
    "Run",
    "RewardTerm",
    "build_run",
    "train",
    "completion_states",
    "sequence_logprobs",
    "trained_logprobs",
    "micro_batch_loss",
    "select_backend",
    "default_run_dir",
    "evaluate",
    "evaluate_checkpoint",
    "current_eval",
    "eval_settings",
]


@dataclass
class RewardTerm:
    """One weighted reward of the config."""

    name: str
    weight: float
    fn: Any
    label: str = ""


@dataclass
class Run:
    """Everything a training run holds. Event hooks receive it, and should rely only on what
    :class:`rlsdk.types.RunContext` declares (``config``, ``step``, ``history``, ``policy``, ``path``,
    ``label``): the rest may change."""

    config: dict[str, Any]
    settings: Settings
    dir: RunDir
    registry: Registry
    policy: Policy
    reference: Policy | None
    optimizer: torch.optim.Optimizer
    task: Task
    sampler: Sampler
    advantage: AdvantageEstimator
    loss: Loss
    engine: GenerationEngine
    rewards: list[RewardTerm]
    backend: LogprobBackend
    trackers: list[Any]
    seeds: SeedTree
    generators: dict[str, torch.Generator]
    device: torch.device
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)

    def label(self, kind: str) -> str:
        """How messages name the run's component of ``kind``: ``loss 'clipped_pg' (plugin rlsdk:policy_gradient)``."""
        return self.labels.get(kind, kind)

    @property
    def path(self) -> Path:
        """The run folder."""
        return self.dir.path

    @property
    def hook(self) -> pluggy.HookRelay:
        """The plugin manager's hook relay."""
        return self.registry.pm.hook


# --------------------------------------------------------------------------------------------------
# Building a run


def default_run_dir(config: dict[str, Any]) -> Path:
    """``run.root/<algorithm>-<task>-<UTC time>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(config["run"]["root"]) / f"{config['algorithm']}-{config['task']['name']}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def _component(registry: Registry, config: dict[str, Any], section: str, kind: str) -> Any:
    spec = dict(config[section])
    name = spec.pop("name")
    return registry.build(kind, name, spec, section)


def select_backend(registry: Registry, spec: dict[str, Any], device: torch.device) -> LogprobBackend:
    """The logprob backend named by ``spec["backend"]``; ``auto`` picks the highest ``priority`` among
    the registered backends whose ``supports(device)`` is true. The other keys of ``spec`` are the
    backend's options (with ``auto``, those of the backend it picks)."""
    return _select_backend(registry, spec, device)[1]


def _select_backend(registry: Registry, spec: dict[str, Any], device: torch.device) -> tuple[str, LogprobBackend]:
    options = dict(spec)
    name = options.pop("backend", "auto")
    if name != "auto":
        backend = registry.build("logprob_backend", name, options, "logprob")
        if not member("logprob_backend", backend, "supports")(device):
            raise ConfigError(f"logprob.backend {name!r} does not support device {device}")
        return name, backend
    best, best_name, best_priority = None, "", -math.inf
    for candidate in registry.names("logprob_backend"):
        backend = registry.build("logprob_backend", candidate, {}, "logprob")
        if not member("logprob_backend", backend, "supports")(device):
            continue
        priority = member("logprob_backend", backend, "priority")
        if priority > best_priority:
            best, best_name, best_priority = backend, candidate, priority
    if best is None:
        raise ConfigError(
            f"logprob.backend=auto found no backend for device {device}; "
            f"registered: {registry.names('logprob_backend')}"
        )
    if options:  # never dropped silently: they must fit the backend auto picked
        where = f"logprob (backend=auto picked {best_name!r} on {device}; name a backend to pin it)"
        best = registry.build("logprob_backend", best_name, options, where)
    return best_name, best


def build_run(config: dict[str, Any], registry: Registry, run_dir: str | Path) -> Run:
    """Instantiate every component of ``config`` (the policy initialised from the ``init`` seed)."""
    settings = Settings.from_config(config)
    train_cfg = settings.train
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    device = torch.device(train_cfg.device)
    seeds = SeedTree(config["seed"])
    torch.manual_seed(seeds.seed("init"))

    policy = _component(registry, config, "policy", "policy").to(device).eval()
    task = _component(registry, config, "task", "task")
    sampler = _component(registry, config, "sampler", "sampler")
    advantage = _component(registry, config, "advantage", "advantage")
    loss = _component(registry, config, "loss", "loss")
    engine = _component(registry, config, "engine", "engine")
    rewards = [
        RewardTerm(
            name, weight, registry.build("reward", name, options, f"rewards.{name}"), registry.label("reward", name)
        )
        for name, weight, options in reward_specs(config)
    ]
    backend_name, backend = _select_backend(registry, config.get("logprob") or {}, device)
    labels = {
        kind: registry.label(kind, config[kind]["name"])
        for kind in ("task", "policy", "sampler", "engine", "advantage", "loss")
    }
    labels["logprob_backend"] = registry.label("logprob_backend", backend_name)
    _check_prompts(policy, task, sampler, labels)
    needs_ref = member("loss", loss, "needs_ref_logprobs") or member("advantage", advantage, "needs_ref_logprobs")
    if needs_ref and not train_cfg.reference:
        raise ConfigError(
            "the loss or advantage needs reference log-probs (KL) but train.reference=false; set it to true"
        )
    reference = None
    if train_cfg.reference:
        reference = copy.deepcopy(policy).eval()
        reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad],
        lr=train_cfg.lr,
        betas=train_cfg.betas,
        weight_decay=train_cfg.weight_decay,
    )
    trackers = [
        registry.build("tracker", name, dict(options or {}), f"trackers.{name}")
        for name, options in (config.get("trackers") or {}).items()
    ]
    generators = {name: seeds.generator(name) for name in ("data", "sampling")}
    run = Run(
        config=config,
        settings=settings,
        dir=RunDir(run_dir),
        registry=registry,
        policy=policy,
        reference=reference,
        optimizer=optimizer,
        task=task,
        sampler=sampler,
        advantage=advantage,
        loss=loss,
        engine=engine,
        rewards=rewards,
        backend=backend,
        trackers=trackers,
        seeds=seeds,
        generators=generators,
        device=device,
        labels=labels,
    )
    sync_engine(run)
    return run


def sync_engine(run: Run, version: int | None = None) -> None:
    """Give the engine the policy's current weights, stamped with ``version`` (default: the run's
    step, the number of optimiser steps those weights have had)."""
    with guard(run.label("engine"), "engine.update_weights(policy, version)"):
        run.engine.update_weights(run.policy, run.step if version is None else version)


def _check_prompts(policy: Policy, task: Task, sampler: Sampler, labels: dict[str, str]) -> None:
    """Before training, let the policy check the task's held-out prompts (``Policy.check_prompts``:
    each tokenises, and fits its length limit with the sampler's ``max_new_tokens``), so a bad
    tokenizer or a too-short ``max_len`` fails before anything is written. The training prompts are
    checked again as they are drawn (the policy raises when one does not fit)."""
    check = member("policy", policy, "check_prompts")
    with guard(labels["task"], "task.eval_examples()"):
        examples = task.eval_examples()
    prompts = (
        [e.prompt for e in check_examples(examples, None, labels["task"], "task.eval_examples()")[:256]]
        if examples
        else []
    )
    with guard(labels["policy"], "policy.check_prompts(prompts, max_new_tokens)"):
        check(prompts, sampler.params.max_new_tokens)


# --------------------------------------------------------------------------------------------------
# One step


def completion_states(
    policy: Policy, sequences: Tensor, attention_mask: Tensor, completion_length: int
) -> tuple[Tensor, Tensor]:
    """``(hidden [B*T, H], targets [B*T])`` for the last ``T`` tokens of ``sequences [B, S]``.

    Position ``t`` of the completion is predicted by the hidden state at ``S - T + t - 1``.
    """
    b, s = sequences.shape
    t = completion_length
    hidden = policy.hidden_states(sequences, attention_mask)[:, s - t - 1 : s - 1, :]
    return hidden.reshape(b * t, -1), sequences[:, s - t :].reshape(b * t)


def sequence_logprobs(
    policy: Policy,
    backend: LogprobBackend,
    sequences: Tensor,
    attention_mask: Tensor,
    completion_length: int,
    temperature: float,
    with_entropy: bool = False,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Log-probabilities ``[B, T]`` (and entropies) of the last ``T`` tokens of ``sequences [B, S]``.

    Temperature 0 (greedy sampling) is treated as 1. With a ``mask [B, T]`` only the tokens where it
    is positive are computed, and the others are 0 (see :func:`trained_logprobs`).
    """
    b, t = sequences.shape[0], completion_length
    hidden, targets = completion_states(policy, sequences, attention_mask, t)
    logprobs, entropy = trained_logprobs(
        backend,
        hidden,
        policy.output_weight(),
        targets,
        mask,
        temperature=_logit_temperature(temperature),
        with_entropy=with_entropy,
    )
    return logprobs.view(b, t), entropy.view(b, t) if entropy is not None else None


def trained_logprobs(
    backend: LogprobBackend,
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    mask: Tensor | None,
    *,
    temperature: float,
    with_entropy: bool,
) -> tuple[Tensor, Tensor | None]:
    """``(logprobs [N], entropy [N] or None)`` from ``backend`` at the tokens where ``mask`` (``N``
    values, or None for all) is positive, 0 at the others, with gradient.

    Only those tokens are given to the backend, so padding costs it nothing (the output layer takes
    ``2·H·V`` FLOPs a token, ``6·H·V`` with the backward). Finding them reads the mask from the
    device once.
    """
    if mask is None:
        out = backend(hidden, weight, targets, temperature=temperature, with_entropy=with_entropy)
        return out.logprobs, out.entropy
    trained = mask.reshape(-1) > 0
    index = trained.nonzero().squeeze(1)
    if 0 < index.numel() < trained.numel():
        out = backend(hidden[index], weight, targets[index], temperature=temperature, with_entropy=with_entropy)
        spread = lambda v: v.new_zeros(trained.shape).index_copy(0, index, v)  # noqa: E731
    else:  # every token trained, or none (then all 0, still with gradient)
        out = backend(hidden, weight, targets, temperature=temperature, with_entropy=with_entropy)
        spread = lambda v: v if index.numel() else torch.where(trained, v, v.new_zeros(()))  # noqa: E731
    return spread(out.logprobs), None if out.entropy is None else spread(out.entropy)


def _logit_temperature(temperature: float) -> float:
    return temperature if temperature > 0 else 1.0


def micro_batch_loss(
    run: Run, micro: TrainBatch, completion_length: int, temperature: float
) -> tuple[LossOutput, Tensor]:
    """``(loss output, entropy [B, T])`` of one micro-batch under the current policy (with gradient).

    The logprob backend owns the fused path: when its ``loss_from_hidden`` returns a result (a fused
    kernel computed the loss straight from the hidden states), that is the micro-batch's loss.
    Otherwise the loss gets the backend's log-probs, and ``batch.entropy`` when it ``needs_entropy``.
    """
    with guard(run.label("policy"), "policy.hidden_states(sequences, attention_mask)"):
        # TrainBatch.from_rollout sets sequences and attention_mask (a policy given None raises here)
        hidden, targets = completion_states(
            run.policy,
            micro.sequences,  # type: ignore[arg-type]
            micro.attention_mask,  # type: ignore[arg-type]
            completion_length,
        )
        weight = run.policy.output_weight()
    temperature = _logit_temperature(temperature)
    loss_label, backend_label = run.label("loss"), run.label("logprob_backend")
    loss_from_hidden = member("logprob_backend", run.backend, "loss_from_hidden")
    with guard(backend_label, "backend.loss_from_hidden(hidden, weight, targets, batch, loss)"):
        fused = loss_from_hidden(hidden, weight, targets, micro, run.loss, temperature=temperature)
    if fused is not None:
        return check_loss_output(fused.output, f"{loss_label} fused by {backend_label}"), fused.entropy
    with guard(backend_label, "backend(hidden, weight, targets)"):
        lp, ent = trained_logprobs(
            run.backend, hidden, weight, targets, micro.mask, temperature=temperature, with_entropy=True
        )
    assert ent is not None  # with_entropy=True
    logprobs, entropy = lp.view(micro.mask.shape), ent.view(micro.mask.shape)
    micro.entropy = entropy if member("loss", run.loss, "needs_entropy") else None
    with guard(loss_label, "loss(logprobs, batch)"):
        out = run.loss(logprobs, micro)
    return check_loss_output(out, loss_label), entropy


def learning_rate(train: TrainSettings, step: int) -> float:
    """``lr`` for 0-based ``step``: linear warm-up over ``warmup_steps``, then constant or a cosine decay
    from ``lr`` to ``lr * min_lr_ratio`` at the last step."""
    lr, warmup = train.lr, train.warmup_steps
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if train.lr_schedule == "cosine":
        span = max(train.steps - warmup - 1, 1)
        progress = min((step - warmup) / span, 1.0)
        ratio = train.min_lr_ratio
        return lr * (ratio + (1.0 - ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return lr


def make_score(run: Run):
    """The score function given to the sampler: weighted sum of the configured rewards."""

    def score(batch: RolloutBatch) -> RolloutBatch:
        lengths = batch.mask.sum(-1)
        metadata = [{**m, "completion_tokens": int(n)} for m, n in zip(batch.metadata, lengths)]
        total = torch.zeros(len(batch.completions), dtype=torch.float32)
        components = {}
        for term in run.rewards:
            label = term.label or f"reward {term.name!r}"
            with guard(label, "reward(prompts, completions, metadata)"):
                values = term.fn(batch.prompts, batch.completions, metadata)
            tensor = check_rewards(values, batch.completions, label)
            components[term.name] = tensor
            total = total + term.weight * tensor
        return batch.replace(rewards=total, reward_components=components)

    return score


def _check_finite(run: Run, stats: dict[str, Any]) -> None:
    """Stop before the optimiser step when the loss or the gradient is not finite (one device sync)."""
    values = torch.stack(
        [torch.as_tensor(stats[k], dtype=torch.float32).detach().cpu().reshape(()) for k in ("loss", "grad_norm")]
    )
    if bool(torch.isfinite(values).all()):
        return
    loss, grad_norm = values.tolist()
    saved = run.dir.latest_checkpoint()
    kept = f"the last checkpoint ({saved.name}) is kept" if saved is not None else "no checkpoint was written"
    raise ComponentError(
        f"{run.label('loss')} gave loss {loss} and gradient norm {grad_norm} at step {run.step + 1}; "
        f"training stops before the optimiser step and {kept}. Lower train.lr, set train.max_grad_norm, "
        "or check the loss and rewards for overflow"
    )


def _to(batch: TrainBatch, device: torch.device) -> TrainBatch:
    fields: dict[str, Any] = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in vars(batch).items()}
    return TrainBatch(**fields)


def train_step(run: Run) -> dict[str, Any]:
    """Run one RL step and return its metrics."""
    cfg = run.settings.train
    start = time.perf_counter()
    sampling = run.sampler.params
    temperature = float(sampling.temperature)

    # -- rollout ----------------------------------------------------------------------------------
    n = cfg.prompts_per_step
    with guard(run.label("task"), f"task.sample({n}, generator)"):
        examples: list[Example] = run.task.sample(n, run.generators["data"])
    examples = check_examples(examples, n, run.label("task"), f"task.sample({n}, generator)")
    with guard(run.label("sampler"), "sampler(engine, examples, score, generator, params)"):
        rollout = run.sampler(run.engine, examples, make_score(run), run.generators["sampling"], sampling)
    rollout = check_rollout(rollout, len(examples), run.label("sampler"))
    assert rollout.sequences is not None and rollout.attention_mask is not None  # check_rollout checked them
    t_len = rollout.mask.shape[1]
    seqs, attn = rollout.sequences.to(run.device), rollout.attention_mask.to(run.device)
    with (
        torch.no_grad(),
        guard(f"{run.label('policy')} with {run.label('logprob_backend')}", "the rollout's log-probs"),
    ):
        mask = rollout.mask.to(run.device)
        old, _ = sequence_logprobs(run.policy, run.backend, seqs, attn, t_len, temperature, mask=mask)
        ref = None
        if run.reference is not None:
            ref, _ = sequence_logprobs(run.reference, run.backend, seqs, attn, t_len, temperature, mask=mask)
    rollout = rollout.replace(old_logprobs=old.float().cpu(), ref_logprobs=None if ref is None else ref.float().cpu())
    with guard(run.label("advantage"), "advantage(batch)"):
        advantages = run.advantage(rollout)
    advantages = check_advantages(advantages, rollout.mask, run.label("advantage"))
    gen_time = time.perf_counter() - start

    # -- updates (the policy stays in eval mode: dropout would make the on-policy ratio differ from 1)
    max_length = float(sampling.max_new_tokens)
    full = TrainBatch.from_rollout(rollout, advantages, max_length=max_length)
    lr = learning_rate(cfg, run.step)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    sums: dict[str, float] = {}
    updates = 0
    for _ in range(cfg.epochs):
        for mini in full.split(min(cfg.mini_batches, full.mask.shape[0])):
            mini = TrainBatch(**{**vars(mini), "num_tokens": None, "num_seqs": None, "num_rows": None})
            run.optimizer.zero_grad(set_to_none=True)
            # Sums stay tensors on the device until the step ends: reading one waits for the GPU.
            stats: dict[str, Any] = {"loss": 0.0, "entropy": 0.0}
            for micro in mini.split(min(cfg.micro_batches, mini.mask.shape[0])):
                micro = _to(micro, run.device)
                out, entropy = micro_batch_loss(run, micro, t_len, temperature)
                with guard(run.label("loss"), "loss.backward()"):
                    out.loss.backward()
                stats["loss"] += out.loss.detach()
                stats["entropy"] += aggregate(entropy.detach(), micro, "token-mean")
                for key, value in out.metrics.items():
                    value = value.detach() if isinstance(value, Tensor) else value
                    stats[f"loss/{key}"] = stats.get(f"loss/{key}", 0.0) + value
            params = [p for p in run.policy.parameters() if p.grad is not None]
            max_norm = cfg.max_grad_norm or math.inf
            stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else 0.0
            _check_finite(run, stats)
            run.optimizer.step()
            updates += 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + float(value)
    sync_engine(run, run.step + 1)  # the weights after this step (run.step counts it when this returns)
    elapsed = time.perf_counter() - start

    # -- metrics ----------------------------------------------------------------------------------
    lengths = rollout.mask.sum(-1)
    metrics: dict[str, Any] = {
        "reward/mean": float(rollout.rewards.mean()),
        "reward/std": float(rollout.rewards.std()) if len(rollout.rewards) > 1 else 0.0,
    }
    for name, values in rollout.reward_components.items():
        metrics[f"reward/{name}"] = float(values.mean())
    metrics.update({key: value / updates for key, value in sums.items()})
    if rollout.ref_logprobs is not None and rollout.old_logprobs is not None:
        metrics["kl"] = float(masked_mean(kl_estimate(rollout.old_logprobs, rollout.ref_logprobs, "k3"), rollout.mask))
    valid_adv = advantages[rollout.mask > 0]
    metrics.update(
        {
            "advantage/mean": float(valid_adv.mean()) if valid_adv.numel() else 0.0,
            "advantage/std": float(valid_adv.std()) if valid_adv.numel() > 1 else 0.0,
            "response_length/mean": float(lengths.mean()),
            "response_length/max": float(lengths.max()),
            "truncated_frac": float(rollout.truncated.float().mean()) if rollout.truncated is not None else 0.0,
            "lr": lr,
            "tokens_per_s": float(lengths.sum()) / elapsed,
            "time/generate": gen_time,
            "step_time": elapsed,
        }
    )
    return metrics


# --------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_state(run: Run) -> dict[str, Any]:
    """Tensors and plain containers only (loadable with ``weights_only=True``)."""
    return {
        "step": run.step,
        "policy": run.policy.state_dict(),
        "reference": run.reference.state_dict() if run.reference is not None else None,
        "optimizer": run.optimizer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            **{name: g.get_state() for name, g in run.generators.items()},
        },
    }


def restore(run: Run, state: dict[str, Any]) -> None:
    """Load a checkpoint into ``run``."""
    run.policy.load_state_dict(state["policy"])
    if run.reference is not None and state.get("reference") is not None:
        run.reference.load_state_dict(state["reference"])
    run.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    for name, g in run.generators.items():
        g.set_state(state["rng"][name])
    run.step = int(state["step"])
    sync_engine(run)


def _restore_checkpoint(run: Run, path: Path) -> None:
    """:func:`restore` from the file ``path``; a checkpoint that does not fit the config is a ConfigError."""
    state = RunDir.load_checkpoint(path)
    try:
        restore(run, state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise ConfigError(
            f"checkpoint {str(path)!r} does not fit this run's config ({detail}); the policy's shape (policy.*) "
            "cannot change on --resume: was config.yaml edited, or a policy option overridden?"
        ) from exc


def eval_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The config sections an evaluation's result depends on (recorded in ``eval.json``)."""
    return {key: copy.deepcopy(config.get(key)) for key in ("task", "policy", "sampler", "engine", "rewards", "eval")}


def current_eval(run_dir: str | Path) -> dict[str, Any] | None:
    """``RUN_DIR/eval.json`` if it scored the run's latest checkpoint under the run's current config, else None."""
    rundir = RunDir(run_dir)
    path, ckpt = rundir.path / "eval.json", rundir.latest_checkpoint()
    if not path.exists() or ckpt is None or not rundir.config_path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    same_config = result.get("eval_config") == json.loads(json.dumps(eval_settings(load_yaml(rundir.config_path))))
    return result if result.get("fingerprint") == RunDir.fingerprint(ckpt) and same_config else None


def evaluate(run: Run, size: int | None = None, temperature: float = 0.0) -> dict[str, float]:
    """Score the policy on the task's held-out examples (greedy by default)."""
    with guard(run.label("task"), "task.eval_examples()"):
        examples = run.task.eval_examples()
    examples = check_examples(
        examples, None, run.label("task"), "task.eval_examples() (the held-out prompts rlsdk eval scores)"
    )
    if size:
        examples = examples[:size]
    with guard(run.label("sampler"), "sampler.eval_params(temperature)"):
        params = member("sampler", run.sampler, "eval_params")(temperature)
    with guard(run.label("sampler"), "sampler(engine, examples, score, generator, params) for evaluation"):
        rollout = run.sampler(run.engine, examples, make_score(run), run.seeds.generator("eval"), params)
    rollout = check_rollout(rollout, len(examples), run.label("sampler"))
    out = {"eval/reward": float(rollout.rewards.mean()), "eval/examples": float(len(examples))}
    for name, values in rollout.reward_components.items():
        out[f"eval/{name}"] = float(values.mean())
    return out


def evaluate_checkpoint(
    run_dir: str | Path, registry: Registry, overrides: list[str] | None = None, checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """Score a run's checkpoint on the task's held-out examples and write ``RUN_DIR/eval.json``.

    ``eval.json`` records which checkpoint it scored (its :meth:`~rlsdk.provenance.rundir.RunDir.fingerprint`)
    and the config sections the score depends on, so :func:`current_eval` reuses it only for that
    checkpoint and config. The run folder is locked while this runs.

    Args:
        run_dir: A run folder written by :func:`train`.
        registry: The components.
        overrides: ``key=value`` changes to the run's config, e.g. ``["eval.size=50"]``.
        checkpoint: The checkpoint file (default: the run's latest).

    Returns:
        ``{"checkpoint", "step", "eval/reward", "eval/examples", "eval/<reward name>", ..., "fingerprint",
        "eval_config"}``.

    Raises:
        StorageError: ``eval.json`` cannot be written; the message holds the result.
    """
    rundir = RunDir(run_dir)
    if not rundir.config_path.is_file():
        raise ConfigError(f"{str(rundir.path)!r} is not a run folder (it has no config.yaml)")
    config = load_config(registry, overrides=overrides, base=load_yaml(rundir.config_path))
    ckpt = Path(checkpoint) if checkpoint else rundir.latest_checkpoint()
    if ckpt is None:
        raise ConfigError(f"no checkpoint in {str(rundir.checkpoints)!r}; train first or pass a checkpoint")
    with rundir.lock():
        state = RunDir.load_checkpoint(ckpt)
        run = build_run(config, registry, rundir.path)
        try:
            run.policy.load_state_dict(state["policy"])
        except (RuntimeError, KeyError) as exc:
            raise ConfigError(
                f"checkpoint {str(ckpt)!r} does not fit the run's policy config: {str(exc).splitlines()[-1].strip()}"
            ) from exc
        run.step = int(state["step"])
        sync_engine(run)
        scores = evaluate(run, run.settings.eval.size, run.settings.eval.temperature)
        result = {"checkpoint": str(ckpt), "step": int(state["step"]), **scores}
        try:
            rundir.write_json(
                "eval.json", {**result, "fingerprint": RunDir.fingerprint(ckpt), "eval_config": eval_settings(config)}
            )
        except StorageError as exc:
            raise StorageError(f"{exc}; the result, not saved: {json.dumps(result)}") from exc
    return result


# --------------------------------------------------------------------------------------------------
# The loop


class _StopSignals:
    """SIGINT and SIGTERM during training: the first asks the loop to stop after the current step (the
    checkpoint it then writes resumes exactly); a second raises :class:`Interrupted` at once, and the
    previous checkpoint stays (an interrupted write leaves no file behind). Installed only in the main
    thread, where Python delivers signals."""

    def __init__(self, run: Run):
        self.run = run
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # `nohup`-style ignoring is respected
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Interrupted(signum, run_dir=str(self.run.dir.path) if self.run.dir.holds_run() else None)
        self.signum = signum
        print(
            f"\nrlsdk: {signal.Signals(signum).name}: finishing step {self.run.step + 1}, then saving a checkpoint "
            "(send it again to stop at once and keep the last checkpoint)",
            file=sys.stderr, flush=True,
        )  # fmt: skip


def _call_hook(run: Run, name: str, /, **kwargs: Any) -> None:
    """Call event hook ``name``; an exception names the plugin whose implementation raised it."""
    hook = getattr(run.hook, name)
    try:
        hook(**kwargs)
    except RlsdkError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported as the plugin's
        owners = {getattr(impl.function, "__code__", None): impl.plugin_name for impl in hook.get_hookimpls()}
        tb, plugin = exc.__traceback__, "?"
        while tb is not None and plugin == "?":
            plugin = owners.get(tb.tb_frame.f_code, "?")
            tb = tb.tb_next
        raise ComponentError(f"the {name} hook of plugin {plugin} raised {type(exc).__name__}: {exc}") from exc


def _trackers(run: Run) -> list[tuple[str, Any]]:
    names = list(run.config.get("trackers") or {})
    return [(run.registry.label("tracker", name), t) for name, t in zip(names, run.trackers)]


def train(
    config: dict[str, Any],
    registry: Registry,
    run_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    until: int | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train, writing the run folder; return a summary.

    Args:
        config: A resolved config (see :func:`rlsdk.config.load_config`).
        registry: The components.
        run_dir: The run folder (default: ``config["run"]["dir"]`` or a new one under ``run.root``).
        resume: Continue the run in ``run_dir`` from its latest checkpoint.
        progress: Show a progress bar (default: ``config["run"]["progress"]``).
        until: Stop after this step (default: ``train.steps``). The learning-rate schedule still
            follows ``train.steps``, so the steps run are those of the full run (``rlsdk reproduce --steps``).
        on_step: Called after every step (once its metrics are written) with the step and its
            metrics; ``rlsdk experiment`` shows its progress within runs this way.

    Nothing is written to the run folder until the first step has succeeded: a new run that fails
    before leaves no folder, and a resume that fails (a bad override, say) leaves ``config.yaml``, the
    manifest and the metrics as they were.

    Raises:
        Interrupted: SIGINT or SIGTERM arrived; the checkpoint it names resumes exactly.
        FolderLocked: Another process is writing ``run_dir``.
        ComponentError: A component raised or broke its contract (a non-finite loss among them).
    """
    validate_config(config, registry)  # a config built by hand gets the checks load_config makes
    run_dir = Path(run_dir or config["run"]["dir"] or default_run_dir(config))
    config = copy.deepcopy(config)
    config["run"]["dir"] = str(run_dir)
    rundir = RunDir(run_dir)
    if resume and not rundir.holds_run():
        raise ConfigError(f"cannot resume {str(run_dir)!r}: it holds no run (no config.yaml or metrics.jsonl)")
    if not resume:
        rundir.check_new()  # before anything is built
    run = build_run(config, registry, run_dir)  # bad options fail here, before anything is written
    with rundir.lock():  # a new run that fails before its first step leaves no folder (see FolderLock)
        return _train(run, resume, progress, until, on_step)


def _train(
    run: Run,
    resume: bool,
    progress: bool | None,
    until: int | None,
    on_step: Callable[[int, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    config, rundir = run.config, run.dir
    if not resume:
        rundir.check_new()  # again, now that no other process can be creating a run here
    ckpt = rundir.latest_checkpoint() if resume else None
    if ckpt is not None:
        _restore_checkpoint(run, ckpt)
    manifest_path = rundir.path / "manifest.json"
    if resume and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        manifest.setdefault("resumes", []).append({"time": time.time(), "argv": sys.argv, "from_step": run.step})
    else:
        plugins = [p.to_dict() for p in run.registry.plugins]
        data_files = list(member("task", run.task, "files"))
        manifest = build_manifest(config, plugins, run.seeds.to_dict(), data_files=data_files)
    run.history = [r for r in read_metrics(rundir.metrics_path) if r.get("step", 0) <= run.step] if resume else []
    start_step = run.step

    def commit() -> None:
        """Once the first step has succeeded: write the config and manifest, and on resume drop the
        metrics past the checkpoint (they are recomputed)."""
        if resume:
            rundir.truncate_metrics(start_step)
        else:
            rundir.create()
        atomic_write_text(rundir.config_path, dump_yaml(config))
        rundir.write_json("manifest.json", manifest)

    pending = True
    trackers = _trackers(run)
    for label, tracker in trackers:
        with guard(label, "tracker.log_config(config)"):
            tracker.log_config(config)
    _call_hook(run, "on_train_start", run=run)

    settings = run.settings
    steps = settings.train.steps if until is None else min(int(until), settings.train.steps)
    every, keep = settings.run.checkpoint_every, settings.run.keep_checkpoints
    last_saved = run.step
    show = settings.run.progress if progress is None else progress
    bar = TrainProgress(steps, run.step, enabled=bool(show))
    try:
        with _StopSignals(run) as stop:
            while run.step < steps and stop.signum is None:
                metrics = train_step(run)
                run.step += 1
                eval_every = settings.eval.every
                if eval_every and run.step % eval_every == 0:
                    metrics.update(evaluate(run, settings.eval.size, settings.eval.temperature))
                if pending:
                    commit()
                    pending = False
                row = {"step": run.step, "wall_time": time.time(), **metrics}
                rundir.append_metrics(row)
                run.history.append(row)
                for label, tracker in trackers:
                    with guard(label, "tracker.log_metrics(metrics, step)"):
                        tracker.log_metrics(metrics, run.step)
                _call_hook(run, "on_step_end", run=run, step=run.step, metrics=dict(metrics))
                if every and run.step % every == 0:
                    rundir.save_checkpoint(run.step, checkpoint_state(run), keep=keep)
                    last_saved = run.step
                bar.update(run.step, metrics)
                if on_step is not None:
                    on_step(run.step, dict(metrics))
            if run.step > last_saved or rundir.latest_checkpoint() is None:
                rundir.save_checkpoint(run.step, checkpoint_state(run), keep=keep)
            if stop.signum is not None and run.step < steps:
                raise Interrupted(stop.signum, str(rundir.latest_checkpoint()), str(rundir.path))
    finally:
        bar.close()
    if pending:
        commit()
    summary = _summary(run)
    if settings.run.plot:
        from rlsdk.plotting import plot_rewards

        summary["reward_curve"] = str(plot_rewards(run.history, rundir.path / "reward_curve.png"))
    rundir.write_json("summary.json", summary)
    for label, tracker in trackers:
        with guard(label, "tracker.close()"):
            tracker.close()
    _call_hook(run, "on_train_end", run=run, summary=summary)
    return summary


def _summary(run: Run) -> dict[str, Any]:
    rewards = [r["reward/mean"] for r in run.history if "reward/mean" in r]
    tail = rewards[-10:]
    return {
        "run_dir": str(run.dir.path),
        "steps": run.step,
        "reward_first": rewards[0] if rewards else None,
        "reward_last10": sum(tail) / len(tail) if tail else None,
        "reward_max": max(rewards) if rewards else None,
        "checkpoint": str(run.dir.latest_checkpoint()),
        "final": run.history[-1] if run.history else {},
    }
