"""Aggregate metrics, bootstrap intervals, tests, multiple-comparison corrections and power for RL experiments.

Data model: the scores of one algorithm form a float array of shape ``(runs, tasks)``;
*runs* are training seeds and *tasks* are benchmarks, normalised per task before aggregating. Every metric also
accepts leading batch axes, ``(..., runs, tasks) -> (...)``, so the bootstrap evaluates all resamples of a chunk in
one call.

The metrics follow Agarwal et al., *Deep Reinforcement Learning at the Edge of the Statistical Precipice*
(NeurIPS 2021, the rliable library), implemented here on numpy/scipy. Defaults: 95%
percentile intervals, 50,000 bootstrap reps for aggregate metrics and 2,000 for P(X > Y), and all randomness drawn
from an explicit ``np.random.Generator`` (or an int seed), so the same seed gives the same interval bit for bit.
rliable ignores its ``random_state`` for the resampling indices (they come from the global ``np.random``), which
is why rlsdk resamples itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize
from scipy import stats as _sps

from rlsdk.errors import ConfigError, did_you_mean

__all__ = ["Interval", "TestResult", "as_scores", "iqm", "mean", "median", "optimality_gap",
           "probability_of_improvement", "performance_profile", "METRICS", "bootstrap_ci",
           "bootstrap_ci_two", "welch_test", "paired_t_test", "mann_whitney_test", "holm", "benjamini_hochberg",
           "power", "seeds_needed", "min_detectable_effect"]  # fmt: skip

#: Elements (indices plus gathered scores) per bootstrap chunk: 16 MB of int64/float64; with the metric's own
#: temporaries a chunk peaks near 70 MB (P(X > Y) on 2 x 10^4 scores), whatever ``reps`` is.
_CHUNK_ELEMENTS = 2**21
_ALTERNATIVES = ("two-sided", "greater")
_MAX_SEEDS = 100_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval (``method`` and ``reps`` say how it was made)."""

    point: float
    low: float
    high: float
    confidence: float
    method: str
    reps: int

    def __str__(self) -> str:
        return f"{self.point:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class TestResult:
    """The outcome of a two-sample test: ``test`` is ``"welch"`` or ``"mann-whitney"``; ``df`` only for Welch."""

    __test__ = False  # not a pytest test class
    test: str
    statistic: float
    p_value: float
    df: float | None = None

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def as_scores(scores, name: str = "scores") -> np.ndarray:
    """Scores as a float64 array of shape ``(runs, tasks)``; 1-D input ``(runs,)`` becomes ``(runs, 1)``.

    Args:
        scores: array-like of shape ``(runs,)`` or ``(runs, tasks)``.
        name: the subject of error messages, used verbatim (e.g. ``"scores 'grpo'"``).

    Returns:
        A float64 array of shape ``(runs, tasks)`` with at least one run and one task.

    Raises:
        ConfigError: non-numeric input, another number of dimensions, no runs or tasks, or a non-finite score.
    """
    try:
        x = np.array(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} is not a numeric array ({err}); expected (runs,) or (runs, tasks)") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ConfigError(f"{name} has shape {x.shape}; expected (runs,) or (runs, tasks)")
    if x.size == 0:
        raise ConfigError(f"{name} is empty (shape {x.shape}); expected at least one run and one task")
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        run, task = (int(i) for i in bad[0])
        value = "NaN" if np.isnan(x[run, task]) else repr(float(x[run, task]))
        raise ConfigError(f"{name} contains {value} at run {run}, task {task}; every score must be finite")
    return x


def _batched(scores, name: str = "scores") -> np.ndarray:
    x = np.asarray(scores, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim < 2 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ConfigError(f"{name} has shape {x.shape}; expected (..., runs, tasks) with runs, tasks >= 1")
    return x


def iqm(scores) -> np.ndarray:
    """Interquartile mean: the mean of the middle 50% of the pooled ``runs * tasks`` scores.

    With n pooled scores, ``int(0.25 * n)`` are trimmed from each end, as ``scipy.stats.trim_mean(x, 0.25,
    axis=None)`` does (Agarwal et al., NeurIPS 2021).

    Args:
        scores: shape ``(..., runs, tasks)``.

    Returns:
        Shape ``(...)``; a numpy float for ``(runs, tasks)`` input.
    """
    x = _batched(scores)
    flat = x.reshape(*x.shape[:-2], -1)
    n = flat.shape[-1]
    k = int(0.25 * n)
    return np.partition(flat, (k, n - k - 1), axis=-1)[..., k : n - k].mean(axis=-1)


def mean(scores) -> np.ndarray:
    """Mean over tasks of the per-task mean over runs (Agarwal et al., NeurIPS 2021). Shape
    ``(..., runs, tasks) -> (...)``."""
    return _batched(scores).mean(axis=-2).mean(axis=-1)


def median(scores) -> np.ndarray:
    """Median over tasks of the per-task mean over runs (Agarwal et al., NeurIPS 2021). Shape
    ``(..., runs, tasks) -> (...)``."""
    return np.median(_batched(scores).mean(axis=-2), axis=-1)


def optimality_gap(scores, gamma: float = 1.0) -> np.ndarray:
    """Shortfall below a target: ``gamma - mean(min(x, gamma))`` over all scores (Agarwal et al., NeurIPS 2021).

    Lower is better. Shape ``(..., runs, tasks) -> (...)``.
    """
    return gamma - np.minimum(_batched(scores), gamma).mean(axis=(-2, -1))


def probability_of_improvement(x, y) -> np.ndarray:
    """P(X > Y) = (1/M) sum_m (1/(Nx Ny)) sum_i sum_j S(x_mi, y_mj), S = 1 if >, 1/2 if ==, 0 if <.

    Per task this is the Mann-Whitney U over ``Nx * Ny``; it is computed from average ranks of the pooled runs,
    U_m = (rank sum of x on task m) - Nx (Nx + 1) / 2 (Agarwal et al., NeurIPS 2021; Mann and Whitney 1947).

    Args:
        x: shape ``(..., Nx, M)``.
        y: shape ``(..., Ny, M)``; the batch axes broadcast against those of ``x``, ``Ny`` may differ from ``Nx``.

    Returns:
        Shape ``(...)``, in [0, 1]; identical inputs give 0.5.

    Raises:
        ConfigError: ``x`` and ``y`` have different numbers of tasks.
    """
    x, y = _batched(x, "x"), _batched(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ConfigError(f"x has {x.shape[-1]} tasks and y has {y.shape[-1]}; both need the same tasks")
    batch = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    nx, ny = x.shape[-2], y.shape[-2]
    pooled = np.concatenate(
        [np.broadcast_to(x, batch + x.shape[-2:]), np.broadcast_to(y, batch + y.shape[-2:])], axis=-2
    )
    u = _sps.rankdata(pooled, axis=-2)[..., :nx, :].sum(axis=-2) - nx * (nx + 1) / 2
    return (u / (nx * ny)).mean(axis=-1)


def performance_profile(scores, taus) -> np.ndarray:
    """Score distribution F(tau) = (1/(M N)) sum_{m,n} 1[x_mn > tau] for each tau (Agarwal et al., NeurIPS 2021).

    Args:
        scores: shape ``(..., runs, tasks)``.
        taus: 1-D thresholds, e.g. ``np.linspace(0, 8, 81)``.

    Returns:
        Shape ``(..., len(taus))``.
    """
    flat = _batched(scores)
    flat = flat.reshape(*flat.shape[:-2], -1)
    taus = np.atleast_1d(np.asarray(taus, dtype=np.float64))
    if taus.ndim != 1:
        raise ConfigError(f"taus has shape {taus.shape}; expected a 1-D array of thresholds")
    out = np.empty(flat.shape[:-1] + taus.shape)
    for i, tau in enumerate(taus):
        out[..., i] = (flat > tau).mean(axis=-1)
    return out


#: The aggregate metrics by name, each ``(..., runs, tasks) -> (...)``, for :func:`bootstrap_ci`.
METRICS: dict[str, Callable[..., np.ndarray]] = {
    "iqm": iqm,
    "mean": mean,
    "median": median,
    "optimality_gap": optimality_gap,
}


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise ConfigError(f"rng is {rng!r}; expected an np.random.Generator or an int seed")


def _check_reps_confidence(reps, confidence) -> None:
    if not isinstance(reps, (int, np.integer)) or isinstance(reps, bool) or reps < 1:
        raise ConfigError(f"reps is {reps!r}; expected an integer >= 1")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence is {confidence!r}; expected a fraction strictly between 0 and 1, e.g. 0.95")


def _bootstrap(arrays, statistic, rng, reps: int, confidence: float, task_bootstrap: bool = False,
               paired: bool = False) -> tuple[float, float]:  # fmt: skip
    """Percentile interval of ``statistic`` over stratified resamples of each array in ``arrays`` (all (N_i, M)).

    Each rep draws, in one row, the run indices of every array (then the task indices): chunking reps changes
    nothing in the random stream, so the interval does not depend on ``_CHUNK_ELEMENTS``. ``paired``: the arrays
    have one shape and share the run indices (run i of each array is resampled together).
    """
    m = arrays[0].shape[1]
    drawn = arrays[:1] if paired else arrays
    high = np.concatenate([np.full(a.size, a.shape[0]) for a in drawn] + ([np.full(m, m)] if task_bootstrap else []))
    chunk = max(1, _CHUNK_ELEMENTS // (high.size + sum(a.size for a in arrays)))
    values = np.empty(reps)
    for start in range(0, reps, chunk):
        c = min(chunk, reps - start)
        draws = rng.integers(0, high, size=(c, high.size))
        tasks = draws[:, None, -m:] if task_bootstrap else np.arange(m)
        batches, offset = [], 0
        for a in arrays:
            batches.append(a[draws[:, offset : offset + a.size].reshape(c, *a.shape), tasks])
            offset += 0 if paired else a.size
        value = np.asarray(statistic(*batches), dtype=np.float64)
        if value.shape != (c,):
            raise ConfigError(
                f"the statistic returned shape {value.shape} for a batch of {c} resamples; expected ({c},)"
            )
        values[start : start + c] = value
    low, high_ = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(low), float(high_)


def bootstrap_ci(scores, metric: Callable[..., np.ndarray] = iqm, *, rng, reps: int = 50_000, confidence: float = 0.95,
                 task_bootstrap: bool = False) -> Interval:  # fmt: skip
    """Stratified-bootstrap percentile interval of an aggregate metric (Agarwal et al., NeurIPS 2021; Efron 1979).

    Each rep resamples the runs of every task with replacement, independently per task (``task_bootstrap=True``
    also resamples the tasks); the interval is the ``(1 -/+ confidence) / 2`` percentiles of the metric over the
    reps. With one run per task every resample equals the data and the interval degenerates to the point.

    Args:
        scores: shape ``(runs,)`` or ``(runs, tasks)``.
        metric: ``(..., runs, tasks) -> (...)``, e.g. a value of :data:`METRICS`.
        rng: an ``np.random.Generator`` or an int seed.
        reps: number of bootstrap resamples.
        confidence: interval size, e.g. 0.95.
        task_bootstrap: also resample tasks.

    Returns:
        An :class:`Interval` whose ``point`` is the metric on the original scores.

    Raises:
        ConfigError: invalid scores, ``rng``, ``reps`` or ``confidence``.
    """
    x = as_scores(scores)
    _check_reps_confidence(reps, confidence)
    low, high = _bootstrap([x], metric, _generator(rng), int(reps), confidence, task_bootstrap)
    return Interval(float(metric(x)), low, high, confidence, "percentile", int(reps))


def bootstrap_ci_two(x, y, statistic: Callable[[np.ndarray, np.ndarray], np.ndarray], *, rng, reps: int = 2_000,
                     confidence: float = 0.95, paired: bool = False) -> Interval:  # fmt: skip
    """Percentile interval of a two-sample statistic, resampling X and Y runs independently within each task.

    rliable's ``StratifiedIndependentBootstrap`` (Agarwal et al., NeurIPS 2021). Use it for P(X > Y)
    (``probability_of_improvement``) or for differences such as ``lambda a, b: iqm(a) - iqm(b)``. With
    ``paired=True``, run i of X and run i of Y (the same seed of two configurations) are resampled together,
    which keeps their correlation (common random numbers); X and Y then have the same shape.

    Args:
        x: shape ``(Nx,)`` or ``(Nx, M)``.
        y: shape ``(Ny,)`` or ``(Ny, M)``, the same tasks as ``x``.
        statistic: ``(..., Nx, M), (..., Ny, M) -> (...)``.
        rng: an ``np.random.Generator`` or an int seed.
        reps: number of bootstrap resamples.
        confidence: interval size, e.g. 0.95.
        paired: resample the runs of X and Y together (row i of each is one pair).

    Returns:
        An :class:`Interval` whose ``point`` is ``statistic(x, y)``.

    Raises:
        ConfigError: invalid scores, different numbers of tasks (or, paired, of runs), or an invalid ``rng``,
            ``reps`` or ``confidence``.
    """
    x, y = as_scores(x, "x"), as_scores(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ConfigError(f"x has {x.shape[1]} tasks and y has {y.shape[1]}; both need the same tasks")
    if paired and x.shape != y.shape:
        raise ConfigError(f"paired samples need one shape; x has {x.shape} and y has {y.shape}")
    _check_reps_confidence(reps, confidence)
    low, high = _bootstrap([x, y], statistic, _generator(rng), int(reps), confidence, paired=paired)
    return Interval(float(statistic(x, y)), low, high, confidence, "percentile", int(reps))


def _sample(x, name: str, test: str, min_runs: int) -> np.ndarray:
    s = as_scores(x, name)
    if s.shape[1] != 1:
        raise ConfigError(f"{name} has {s.shape[1]} tasks (shape {s.shape}); the {test} test compares one "
                          "score per run: pass shape (runs,) or (runs, 1)")  # fmt: skip
    if s.shape[0] < min_runs:
        raise ConfigError(f"{name} has {s.shape[0]} run(s); the {test} test needs >= {min_runs} per sample")
    return s[:, 0]


def _var(s: np.ndarray) -> float:
    """The sample variance (ddof 1), exactly 0 for a constant sample (a rounded mean would leave ~1 ulp)."""
    return 0.0 if s.min() == s.max() else float(s.var(ddof=1))


def welch_test(x, y) -> TestResult:
    """Two-sided Welch t-test (Welch 1947; recommended by Colas et al. 2019 and Delacre et al. 2017).

    t = (mean_x - mean_y) / sqrt(s_x^2/N_x + s_y^2/N_y) with Welch-Satterthwaite
    df = (s_x^2/N_x + s_y^2/N_y)^2 / [(s_x^2/N_x)^2/(N_x-1) + (s_y^2/N_y)^2/(N_y-1)], p = 2 sf_t(abs(t); df);
    this equals ``scipy.stats.ttest_ind(x, y, equal_var=False)``. When both samples have zero variance the test is
    undefined (scipy returns nan): here p = 1.0 and t = 0 if the means are equal, else p = 0.0 and t = +/-inf, and
    ``df`` is None.

    Args:
        x: shape ``(runs,)`` or ``(runs, 1)``, at least 2 runs.
        y: the same, for the other configuration.

    Returns:
        A :class:`TestResult` with ``test="welch"``.

    Raises:
        ConfigError: more than one task, fewer than 2 runs, or non-finite scores.
    """
    x, y = _sample(x, "x", "Welch", 2), _sample(y, "y", "Welch", 2)
    vx, vy = _var(x) / len(x), _var(y) / len(y)
    diff = x.mean() - y.mean()
    if vx + vy == 0:
        return TestResult("welch", 0.0 if diff == 0 else float(np.copysign(np.inf, diff)), 1.0 if diff == 0 else 0.0)
    t = diff / np.sqrt(vx + vy)
    # df in the shares a = vx / (vx + vy), b = vy / (vx + vy): 1 / (a^2/(N_x-1) + b^2/(N_y-1)), the same
    # value, without squaring variances that underflow (vx = 1e-300 would give 0 / 0)
    a, b = vx / (vx + vy), vy / (vx + vy)
    df = 1.0 / (a**2 / (len(x) - 1) + b**2 / (len(y) - 1))
    return TestResult("welch", float(t), float(2 * _sps.t.sf(abs(t), df)), float(df))


def paired_t_test(x, y) -> TestResult:
    """Two-sided paired t-test on d_i = x_i - y_i (Student 1908), for runs paired by seed.

    t = mean(d) / (s_d / sqrt(n)) with n - 1 degrees of freedom; equals ``scipy.stats.ttest_rel(x, y)``. Pairing
    removes the seed-to-seed variation both configurations share (the same initial weights and data order), so
    it finds smaller effects than :func:`welch_test` when the pairs are correlated. When every d_i is equal the
    test is undefined (scipy returns nan): here p = 1.0 and t = 0 if they are 0, else p = 0.0 and t = +/-inf.

    Args:
        x: shape ``(runs,)`` or ``(runs, 1)``, at least 2 runs; row i pairs with row i of ``y``.
        y: the same shape as ``x``.

    Returns:
        A :class:`TestResult` with ``test="paired-t"``.

    Raises:
        ConfigError: more than one task, fewer than 2 pairs, different numbers of runs, or non-finite scores.
    """
    x, y = _sample(x, "x", "paired t", 2), _sample(y, "y", "paired t", 2)
    if len(x) != len(y):
        raise ConfigError(f"x has {len(x)} runs and y has {len(y)}; the paired t test needs one y per x")
    d = x - y
    sd = np.sqrt(_var(d))
    if sd == 0:
        mean_d = float(d.mean())
        return TestResult(
            "paired-t", 0.0 if mean_d == 0 else float(np.copysign(np.inf, mean_d)), 1.0 if mean_d == 0 else 0.0
        )
    t = d.mean() / (sd / np.sqrt(len(d)))
    return TestResult("paired-t", float(t), float(2 * _sps.t.sf(abs(t), len(d) - 1)), float(len(d) - 1))


def mann_whitney_test(x, y) -> TestResult:
    """Two-sided Mann-Whitney U test (Mann and Whitney 1947), via ``scipy.stats.mannwhitneyu``.

    U = sum_i sum_j S(x_i, y_j) with S as in :func:`probability_of_improvement`, so U / (N_x N_y) = P(X > Y).

    Args:
        x: shape ``(runs,)`` or ``(runs, 1)``.
        y: the same, for the other configuration.

    Returns:
        A :class:`TestResult` with ``test="mann-whitney"`` and ``statistic`` = U of ``x``.

    Raises:
        ConfigError: more than one task or non-finite scores.
    """
    x, y = _sample(x, "x", "Mann-Whitney", 1), _sample(y, "y", "Mann-Whitney", 1)
    res = _sps.mannwhitneyu(x, y, alternative="two-sided")
    return TestResult("mann-whitney", float(res.statistic), float(res.pvalue))


def _pvalues(pvalues) -> np.ndarray:
    p = np.atleast_1d(np.asarray(pvalues, dtype=np.float64))
    if p.ndim != 1:
        raise ConfigError(f"p-values have shape {p.shape}; expected a 1-D sequence")
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)))
    if len(bad):
        raise ConfigError(f"p-value {bad[0]} is {float(p[bad[0]])!r}; every p-value must lie in [0, 1]")
    return p


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (Holm 1979), in the input order; controls the family-wise error rate.

    With p_(1) <= ... <= p_(m): adjusted p_(k) = max_{j <= k} min(1, (m - j + 1) p_(j)).

    Args:
        pvalues: 1-D p-values in [0, 1].

    Returns:
        The adjusted p-values (empty for empty input).

    Raises:
        ConfigError: a p-value outside [0, 1] or NaN.
    """
    p = _pvalues(pvalues)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    return adjusted


def benjamini_hochberg(pvalues) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (Benjamini and Hochberg 1995), in the input order; controls the FDR.

    With p_(1) <= ... <= p_(m): adjusted p_(k) = min_{j >= k} min(1, m p_(j) / j); equals
    ``scipy.stats.false_discovery_control(p, method="bh")``.

    Args:
        pvalues: 1-D p-values in [0, 1].

    Returns:
        The adjusted p-values (empty for empty input).

    Raises:
        ConfigError: a p-value outside [0, 1] or NaN.
    """
    p = _pvalues(pvalues)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (len(p) / np.arange(1, len(p) + 1)))  # m / j >= 1 exactly, so >= p
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
    return adjusted


def _check_power_args(n, alpha, alternative, target=None) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
        raise ConfigError(f"n is {n!r}; expected an integer number of seeds per arm >= 2")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha is {alpha!r}; expected a significance level strictly between 0 and 1, e.g. 0.05")
    if target is not None and not 0 < target < 1:
        raise ConfigError(f"power is {target!r}; expected a target strictly between 0 and 1, e.g. 0.8")
    if alternative not in _ALTERNATIVES:
        raise ConfigError(f"alternative is {alternative!r}{did_you_mean(alternative, _ALTERNATIVES)}; "
                          f"valid: {', '.join(_ALTERNATIVES)}")  # fmt: skip


def _power(d: float, n: int, alpha: float, alternative: str, paired: bool = False) -> float:
    df, delta = (n - 1, d * np.sqrt(n)) if paired else (2 * n - 2, d * np.sqrt(n / 2))
    # scipy 1.10 and 1.11 warn "invalid value" / "divide by zero encountered in _nct_sf" at small df
    # while returning the value scipy 1.17 gives: the warning is silenced, a non-finite result is not.
    with np.errstate(invalid="ignore", divide="ignore"):
        if alternative == "greater":
            power = float(_sps.nct.sf(_sps.t.ppf(1 - alpha, df), df, delta))
        else:
            t = _sps.t.ppf(1 - alpha / 2, df)
            # F_nct(-t; df, delta) = sf_nct(t; df, -delta): the same value, without scipy's nan for large delta.
            power = float(_sps.nct.sf(t, df, delta) + _sps.nct.sf(t, df, -delta))
    if not np.isfinite(power):
        raise FloatingPointError(f"scipy's noncentral t gave power {power} for df={df}, noncentrality {delta:.4g}")
    return power


def power(d: float, n: int, alpha: float = 0.05, alternative: str = "two-sided", *, paired: bool = False) -> float:
    """Power of the two-sample t-test with ``n`` seeds per arm and standardised effect d = delta_mu / sigma.

    df = 2n - 2, noncentrality delta = d sqrt(n/2); two-sided power = 1 - F_nct(t_{1-alpha/2}; df, delta) +
    F_nct(-t_{1-alpha/2}; df, delta), one-sided ("greater") = 1 - F_nct(t_{1-alpha}; df, delta)
    (Cohen 1988; Colas et al., *How Many Random Seeds?*, 2018). With ``paired=True`` it is the power of
    :func:`paired_t_test` on ``n`` pairs: d is the mean difference over the standard deviation of the
    differences (Cohen's d_z), df = n - 1 and delta = d sqrt(n).

    Args:
        d: standardised effect size.
        n: seeds per arm, >= 2.
        alpha: significance level.
        alternative: ``"two-sided"`` or ``"greater"``.
        paired: the paired t-test on ``n`` pairs instead.

    Returns:
        The probability of rejecting H0 at level ``alpha``.

    Raises:
        ConfigError: an invalid ``d``, ``n``, ``alpha`` or ``alternative``.
    """
    _check_power_args(n, alpha, alternative)
    if not np.isfinite(d):
        raise ConfigError(f"d is {d!r}; expected a finite standardised effect size")
    return _power(float(d), int(n), alpha, alternative, paired)


def seeds_needed(d: float, power: float = 0.8, alpha: float = 0.05, alternative: str = "two-sided", *,
                 paired: bool = False) -> int:  # fmt: skip
    """The smallest number of seeds per arm n >= 2 whose t-test :func:`power` at effect ``d`` reaches ``power``.

    Power grows with n, so the search doubles n and then bisects (Colas et al. 2018).

    Args:
        d: standardised effect size, > 0.
        power: target power.
        alpha: significance level.
        alternative: ``"two-sided"`` or ``"greater"``.
        paired: for the paired t-test (see :func:`power`).

    Returns:
        Seeds per arm.

    Raises:
        ConfigError: invalid arguments, or more than 100,000 seeds would be needed.
    """
    _check_power_args(2, alpha, alternative, power)
    if not (np.isfinite(d) and d > 0):
        raise ConfigError(f"d is {d!r}; expected a finite effect size > 0")

    def reaches(n: int) -> bool:
        return _power(float(d), n, alpha, alternative, paired) >= power

    if reaches(2):
        return 2
    low, high = 2, 4  # invariant: power(low) < target
    while not reaches(high):
        if high >= _MAX_SEEDS:
            raise ConfigError(f"d = {d!r} needs more than {_MAX_SEEDS} seeds per arm for power {power}; "
                              "the effect is too small to detect")  # fmt: skip
        low, high = high, min(2 * high, _MAX_SEEDS)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def min_detectable_effect(n: int, power: float = 0.8, alpha: float = 0.05, alternative: str = "two-sided", *,
                          paired: bool = False) -> float:  # fmt: skip
    """The effect d > 0 at which the t-test with ``n`` seeds per arm has the target ``power`` (Colas et al. 2018).

    Solves :func:`power` (d, n) = ``power`` with ``scipy.optimize.brentq``.

    Args:
        n: seeds per arm, >= 2.
        power: target power, above ``alpha`` (the power at d = 0).
        alpha: significance level.
        alternative: ``"two-sided"`` or ``"greater"``.
        paired: for the paired t-test (see :func:`power`).

    Returns:
        The minimum detectable standardised effect.

    Raises:
        ConfigError: invalid arguments, or ``power <= alpha``.
    """
    _check_power_args(n, alpha, alternative, power)
    if power <= alpha:
        raise ConfigError(f"power is {power!r}; it must exceed alpha = {alpha!r}, the power at d = 0")

    def gap(d: float) -> float:
        return _power(d, int(n), alpha, alternative, paired) - power

    high = 1.0
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-12))
