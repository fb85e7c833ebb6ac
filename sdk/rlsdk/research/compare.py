"""Compare the arms of an experiment against a baseline, with intervals, tests and power.

For every arm, with ``X`` its ``(runs, tasks)`` scores and ``Y`` the baseline's:

- the aggregate metric (IQM by default) with a stratified-bootstrap percentile interval;
- the difference ``metric(X) - metric(Y)`` with an interval from resampling X and Y independently;
- the probability of improvement ``P(X > Y)`` with its interval (Agarwal et al., NeurIPS 2021);
- Welch's t-test on the per-seed scores (averaged over tasks), with Holm's correction over the
  arms compared (Holm 1979); with ``paired=True`` (an ablation, or any experiment, since every arm
  runs the same seeds) the paired t-test on the per-seed differences instead, and the difference's
  interval from resampling seeds with their pairs;
- the minimum detectable effect: the smallest standardised difference ``d`` a two-sided Welch-type
  test at ``alpha`` finds with power 0.8 given the seeds at hand, and that ``d`` in score units
  (``d`` times the pooled standard deviation). With 5 seeds per arm it is about 2 standard deviations
  (Colas et al., *How Many Random Seeds?*, 2018): a non-significant result then says little.

Every interval is reproducible: each arm's resampling draws from its own generator, seeded by
``(seed, arm name)``, so adding an arm leaves the others' intervals unchanged.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from rlsdk.errors import ConfigError, did_you_mean
from rlsdk.research import stats

__all__ = ["ArmResult", "Comparison", "compare"]


@dataclass
class ArmResult:
    """One arm's line of a :class:`Comparison` (the vs-baseline fields are None for the baseline)."""

    arm: str
    runs: int
    tasks: int
    value: stats.Interval
    diff: stats.Interval | None = None
    p_improve: stats.Interval | None = None
    welch: stats.TestResult | None = None
    p_adjusted: float | None = None
    significant: bool | None = None
    mde: float | None = None
    mde_score: float | None = None
    pairs: int | None = None


@dataclass
class Comparison:
    """The result of :func:`compare`: one :class:`ArmResult` per arm, and how it was computed."""

    metric: str
    baseline: str
    arms: list[ArmResult]
    confidence: float
    reps: int
    pair_reps: int
    alpha: float
    seed: int
    paired: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for ``comparison.json`` (an infinite or NaN number becomes None: strict JSON)."""
        return _finite(asdict(self))

    def to_markdown(self) -> str:
        """A Markdown table with the methods stated under it."""
        pct = f"{self.confidence:.0%}"
        lines = [
            f"| arm | seeds | {self.metric} [{pct} CI] | difference vs {self.baseline} | P(arm > {self.baseline}) | "
            f"{'paired t' if self.paired else 'Welch'} p (Holm) | detectable d (score) |",
            "|---|---|---|---|---|---|---|",
        ]
        for a in self.arms:
            if a.diff is None:
                lines.append(f"| **{a.arm}** (baseline) | {a.runs} | {a.value} | | | | |")
                continue
            mark = " *" if a.significant else ""
            p = f"{a.welch.p_value:.3g} ({a.p_adjusted:.3g}){mark}" if a.welch else "n/a"
            mde = f"{a.mde:.2f} ({a.mde_score:.3g})" if a.mde is not None else "n/a"
            lines.append(f"| {a.arm} | {a.runs} | {a.value} | {a.diff} | {a.p_improve} | {p} | {mde} |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _paired_rows(arm: str, x: np.ndarray, baseline: str, y: np.ndarray, seeds: dict[str, list[int]] | None):
    """The rows of ``x`` and ``y`` that pair up: the same seed, or (without seeds) the same row."""
    if seeds is None:
        if x.shape[0] != y.shape[0]:
            raise ConfigError(
                f"paired comparison of arm {arm!r} ({x.shape[0]} runs) with {baseline!r} ({y.shape[0]} runs) needs "
                "equal numbers of runs, or the seeds of each run"
            )
        return x, y
    common = [s for s in seeds[arm] if s in set(seeds[baseline])]
    if not common:
        raise ConfigError(
            f"arm {arm!r} and baseline {baseline!r} share no seed; a paired comparison needs common seeds"
        )
    return x[[seeds[arm].index(s) for s in common]], y[[seeds[baseline].index(s) for s in common]]


def _rng(seed: int, arm: str, what: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(arm.encode()), what])


def compare(
    scores: dict[str, Any],
    baseline: str | None = None,
    *,
    metric: str = "iqm",
    confidence: float = 0.95,
    reps: int = 50_000,
    pair_reps: int = 2_000,
    alpha: float = 0.05,
    seed: int = 0,
    paired: bool = False,
    seeds: dict[str, list[int]] | None = None,
) -> Comparison:
    """Compare every arm with the baseline.

    Args:
        scores: Arm name -> scores of shape ``(runs,)`` or ``(runs, tasks)``; every arm has the same
            tasks, in the same order. Runs may differ in number.
        baseline: The arm the others are compared with (default: the first).
        metric: The aggregate: one of :data:`rlsdk.research.stats.METRICS` (``iqm``, ``mean``,
            ``median``, ``optimality_gap``).
        confidence: The intervals' confidence level.
        reps: Bootstrap resamples for each arm's metric interval (rliable's default, 50,000).
        pair_reps: Bootstrap resamples for the difference and ``P(X > Y)`` (rliable uses 2,000).
        alpha: The level of the Holm-corrected Welch tests and of the detectable effect.
        seed: Seeds every resampling (see the module docstring).
        paired: Pair each arm's runs with the baseline's by seed: the difference's interval resamples
            pairs, the test is the paired t-test and the detectable d is Cohen's d_z (the mean
            difference over the standard deviation of the differences).
        seeds: Arm -> the seed of each row, to pair rows by seed (only the seeds both arms have are
            paired). Without it, paired arms need equal numbers of runs, row i pairing with row i.

    Raises:
        ConfigError: An unknown metric or baseline, arms with different numbers of tasks, or bad scores.
    """
    if metric not in stats.METRICS:
        raise ConfigError(
            f"metric {metric!r} is not known{did_you_mean(metric, stats.METRICS)}; valid: {', '.join(stats.METRICS)}"
        )
    if not scores:
        raise ConfigError("compare needs the scores of at least one arm")
    arrays = {arm: stats.as_scores(x, name=f"scores of arm {arm!r}") for arm, x in scores.items()}
    baseline = next(iter(arrays)) if baseline is None else baseline
    if baseline not in arrays:
        raise ConfigError(
            f"baseline {baseline!r} is not an arm{did_you_mean(baseline, arrays)}; arms: {', '.join(arrays)}"
        )
    if seeds is not None:
        wrong = {
            arm: (len(seeds.get(arm, [])), x.shape[0])
            for arm, x in arrays.items()
            if len(seeds.get(arm, [])) != x.shape[0]
        }
        if wrong:
            raise ConfigError(f"seeds must name one seed per run; (seeds, runs) per arm: {wrong}")
    tasks = {arm: x.shape[1] for arm, x in arrays.items()}
    if len(set(tasks.values())) > 1:
        raise ConfigError(f"every arm needs the same tasks; numbers of tasks per arm: {tasks}")
    arrays = {baseline: arrays.pop(baseline), **arrays}  # the baseline's line comes first
    func = stats.METRICS[metric]
    y = arrays[baseline]
    results = []
    for arm, x in arrays.items():
        value = stats.bootstrap_ci(x, func, rng=_rng(seed, arm, 0), reps=reps, confidence=confidence)
        result = ArmResult(arm=arm, runs=x.shape[0], tasks=x.shape[1], value=value)
        if arm != baseline:
            result.p_improve = stats.bootstrap_ci_two(
                x, y, stats.probability_of_improvement, rng=_rng(seed, arm, 2), reps=pair_reps, confidence=confidence
            )
            xp, yp = _paired_rows(arm, x, baseline, y, seeds) if paired else (x, y)
            result.pairs = xp.shape[0] if paired else None
            result.diff = stats.bootstrap_ci_two(
                xp,
                yp,
                lambda a, b: func(a) - func(b),
                rng=_rng(seed, arm, 1),
                reps=pair_reps,
                confidence=confidence,
                paired=paired,
            )
            xs, ys = xp.mean(axis=1), yp.mean(axis=1)
            if min(len(xs), len(ys)) >= 2:
                result.welch = stats.paired_t_test(xs, ys) if paired else stats.welch_test(xs, ys)
                result.mde = stats.min_detectable_effect(min(len(xs), len(ys)), power=0.8, alpha=alpha, paired=paired)
                spread = (xs - ys).std(ddof=1) if paired else math.sqrt((xs.var(ddof=1) + ys.var(ddof=1)) / 2)
                result.mde_score = result.mde * spread
        results.append(result)
    tested = [r for r in results if r.welch is not None]
    if tested:
        adjusted = stats.holm([r.welch.p_value for r in tested if r.welch is not None])
        for r, p in zip(tested, adjusted):
            r.p_adjusted = float(p)
            r.significant = bool(p < alpha)
    pct = f"{confidence:.0%}"
    test = (
        "the paired t-test on the per-seed differences (scores averaged over tasks; runs paired by seed)"
        if paired
        else "Welch's t-test on the per-seed scores averaged over tasks"
    )
    notes = [
        f"{metric} with {pct} percentile intervals from a stratified bootstrap "
        f"({reps} resamples; runs resampled within each task).",
        f"Difference vs {baseline}: "
        + ("pairs of runs (same seed) resampled together" if paired else "arm and baseline resampled independently")
        + f" ({pair_reps} resamples); P(arm > {baseline}): all runs of both, resampled independently.",
        f"p: {test}; Holm-corrected over {len(tested)} test(s); * marks adjusted p < {alpha}.",
        f"Detectable d: the smallest standardised difference found with power 0.8 at alpha {alpha} (two-sided) "
        + (
            "with the number of pairs, d being the mean difference over the standard deviation of the differences; "
            if paired
            else "with the smaller arm's number of seeds; "
        )
        + "in brackets, in score units.",
    ]
    if metric == "optimality_gap":
        notes.append("The optimality gap is a shortfall: lower is better, so a better arm has a negative difference.")
    if min(r.runs for r in results) < 10:
        notes.append(
            "Under 10 seeds per arm the bootstrap intervals are too narrow (Colas et al. 2019 report too many false "
            "positives for bootstrap tests at small N); read the t-test and the detectable d."
        )
    if any(r.welch is None and r.arm != baseline for r in results):
        notes.append("Arms with fewer than 2 seeds (or pairs) get no test: a t-test needs 2.")
    return Comparison(metric, baseline, results, confidence, reps, pair_reps, alpha, seed, paired, notes)
