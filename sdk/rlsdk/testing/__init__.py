"""rlsdk.testing: pytest fixtures and conformance checks for plugin authors.

Installing rlsdk registers ``rlsdk.testing.pytest_plugin`` as a pytest plugin (the ``pytest11``
entry point), so the tests of any plugin package get its fixtures with no configuration. The
``check_*`` functions are plain functions: call them from a test, a notebook or a script. Each
returns None when the component conforms and raises ``AssertionError`` naming the component and the
property it broke. Each first checks the component against its kind with
:func:`rlsdk.kinds.conform` (a missing required member, a member of the wrong type, an undeclared
``needs_*`` attribute), as the trainer does when it builds the component; :data:`rlsdk.kinds.KINDS`
names each kind's check.

===============================  ===================================================================
check                            what it verifies
===============================  ===================================================================
:func:`check_loss`               ``LossOutput`` with a finite scalar loss and finite metrics;
                                 gradient finite and exactly 0 at masked positions; values at masked
                                 positions ignored; inputs unchanged; deterministic; the same loss
                                 and gradient when the batch is split into 1, 2 or 4 micro-batches
:func:`check_advantage`          ``[B, T]`` floating, finite, exactly 0 where the mask is 0; inputs
                                 unchanged; deterministic; masked old/ref log-probs ignored
:func:`check_reward`             one finite number per completion; deterministic; inputs unchanged
:func:`check_sampler`            ``params`` and ``eval_params``; through an engine, a scored
                                 ``RolloutBatch`` with consistent shapes, groups of ``params.n`` and
                                 texts; ``max_new_tokens`` of the params given; reproducible from the
                                 generator
:func:`check_engine`             a ``Generation`` of ``n`` completions per prompt with consistent
                                 token ids, log-probs, finish reasons and weight versions; the row
                                 layout; reproducible from the generator; ``update_weights``
:func:`check_task`               examples drawn only from the generator; a fixed eval set
:func:`check_logprob_backend`    log-probs, entropies and gradients match a float64 reference, and
                                 so does ``loss_from_hidden`` where the backend defines it
===============================  ===================================================================

Fixtures (all CPU, tiny, seeded): ``rlsdk_registry`` (a factory: ``rlsdk_registry(my_plugin)`` is
:func:`make_registry`), ``rlsdk_train_batch`` (:func:`make_train_batch`), ``rlsdk_rollout_batch``
(:func:`make_rollout_batch`), ``rlsdk_policy`` (:func:`make_policy`), ``rlsdk_examples``
(:func:`make_examples`) and ``rlsdk_engine`` (:func:`make_engine` of ``rlsdk_policy``).

A plugin package's ``tests/test_my_plugin.py`` (after ``pip install rlsdk`` and ``pip install -e .``)::

    import rlsdk
    import rlsdk.testing
    import my_rlsdk_plugin


    def test_discovered_through_the_entry_point():
        assert "my_loss" in rlsdk.get_registry(refresh=True).names("loss")


    def test_loss_conforms(rlsdk_registry):
        loss = rlsdk_registry(my_rlsdk_plugin).create("loss", "my_loss")
        rlsdk.testing.check_loss(loss)


    def test_loss_on_my_batch(rlsdk_registry, rlsdk_train_batch):
        loss = rlsdk_registry(my_rlsdk_plugin).create("loss", "my_loss", {"agg": "seq-mean-token-sum"})
        rlsdk.testing.check_loss(loss, rlsdk_train_batch)

:func:`make_registry` holds rlsdk's own reference plugins plus the plugins given, and no other
installed plugin, so a test sees exactly the components it names.

The package: builders in ``_builders``, one module of checks per kind (``losses``, ``advantages``,
``rewards``, ``samplers``, ``engines``, ``tasks``, ``backends``) and the fixtures in
``pytest_plugin``. It imports torch and rlsdk only inside its functions: loading it costs a pytest
session nothing.
"""

from __future__ import annotations

from rlsdk.testing._builders import (
    RTOL,  # noqa: F401 - a constant of the API
    make_engine,
    make_examples,
    make_policy,
    make_registry,
    make_rollout_batch,
    make_train_batch,
)
from rlsdk.testing.advantages import check_advantage
from rlsdk.testing.backends import check_logprob_backend
from rlsdk.testing.engines import check_engine
from rlsdk.testing.losses import MICRO_BATCH_SPLITS, check_loss  # noqa: F401 - a constant of the API
from rlsdk.testing.rewards import check_reward
from rlsdk.testing.samplers import check_sampler
from rlsdk.testing.tasks import check_task

try:  # the fixtures, also importable from here (pytest loads them from rlsdk.testing.pytest_plugin)
    from rlsdk.testing.pytest_plugin import (  # noqa: F401
        rlsdk_engine,
        rlsdk_examples,
        rlsdk_policy,
        rlsdk_registry,
        rlsdk_rollout_batch,
        rlsdk_train_batch,
    )
except ImportError:  # pragma: no cover - the check functions work without pytest
    pass

__all__ = [
    "make_registry",
    "make_train_batch",
    "make_rollout_batch",
    "make_policy",
    "make_examples",
    "make_engine",
    "check_loss",
    "check_advantage",
    "check_reward",
    "check_sampler",
    "check_engine",
    "check_task",
    "check_logprob_backend",
]
