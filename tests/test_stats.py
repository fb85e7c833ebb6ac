"""rlsdk.research.stats against plain-loop float64 references, scipy and the tables of methodology.md section 6."""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats as sps

from rlsdk.errors import ConfigError
from rlsdk.research import stats as S

FAST = settings(max_examples=40, deadline=None)


def scores(min_runs=1, max_runs=6, max_tasks=4, tasks=None, batch=None):
    """(runs, tasks) arrays, half of them small integers (many ties), optionally with a leading batch axis."""

    def build(shape):
        ints = arrays(np.float64, shape, elements=st.integers(0, 3).map(float))
        floats = arrays(np.float64, shape, elements=st.floats(-100, 100, allow_subnormal=False))
        return st.one_of(ints, floats)

    task_st = st.just(tasks) if tasks is not None else st.integers(1, max_tasks)
    base = st.tuples(st.integers(min_runs, max_runs), task_st)
    shape = base if batch is None else st.tuples(st.integers(1, batch), base).map(lambda bs: (bs[0], *bs[1]))
    return shape.flatmap(build)


def pairs(min_runs=1, max_runs=6, max_tasks=4):
    """(x, y) with the same number of tasks and possibly different numbers of runs."""
    return st.integers(1, max_tasks).flatmap(
        lambda m: st.tuples(scores(min_runs, max_runs, tasks=m), scores(min_runs, max_runs, tasks=m))
    )


def scipy_welch(x, y):
    """scipy's Welch test, without its precision-loss warning for nearly constant samples."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return sps.ttest_ind(np.ravel(x), np.ravel(y), equal_var=False)


# ---- plain float64 references ------------------------------------------------------------------------------------


def cols(x):
    return [[float(x[n][m]) for n in range(len(x))] for m in range(len(x[0]))]


def ref_iqm(x):
    s = sorted(float(v) for row in x for v in row)
    k = int(0.25 * len(s))
    kept = s[k : len(s) - k]
    return sum(kept) / len(kept)


def ref_mean(x):
    per_task = [sum(c) / len(c) for c in cols(x)]
    return sum(per_task) / len(per_task)


def ref_median(x):
    return statistics.median([sum(c) / len(c) for c in cols(x)])


def ref_gap(x, gamma=1.0):
    s = [float(v) for row in x for v in row]
    return gamma - sum(min(v, gamma) for v in s) / len(s)


def ref_poi(x, y):
    total = 0.0
    for cx, cy in zip(cols(x), cols(y)):
        u = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in cx for b in cy)
        total += u / (len(cx) * len(cy))
    return total / len(x[0])


def ref_profile(x, taus):
    s = [float(v) for row in x for v in row]
    return [sum(v > t for v in s) / len(s) for t in taus]


REFS = {"iqm": ref_iqm, "mean": ref_mean, "median": ref_median, "optimality_gap": ref_gap}


# ---- metrics ---------------------------------------------------------------------------------------------------


@FAST
@given(x=scores())
def test_metrics_match_references(x):
    for name, metric in S.METRICS.items():
        assert float(metric(x)) == pytest.approx(REFS[name](x), rel=1e-9, abs=1e-9), name
    assert float(S.optimality_gap(x, gamma=2.0)) == pytest.approx(ref_gap(x, 2.0), rel=1e-9, abs=1e-9)
    assert float(S.iqm(x)) == pytest.approx(sps.trim_mean(x, 0.25, axis=None), rel=1e-12, abs=1e-12)


@FAST
@given(xy=pairs())
def test_probability_of_improvement_matches_reference_and_mann_whitney(xy):
    x, y = xy
    p = float(S.probability_of_improvement(x, y))
    assert p == pytest.approx(ref_poi(x, y), abs=1e-12)
    assert p + float(S.probability_of_improvement(y, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(S.probability_of_improvement(x, x)) == pytest.approx(0.5, abs=1e-12)
    for m in range(x.shape[1]):
        u = sps.mannwhitneyu(x[:, m], y[:, m], alternative="two-sided").statistic
        assert float(S.probability_of_improvement(x[:, m : m + 1], y[:, m : m + 1])) == pytest.approx(
            u / (len(x) * len(y))
        )


@FAST
@given(x=scores(), taus=st.lists(st.floats(-5, 5) | st.integers(0, 3).map(float), max_size=6))
def test_performance_profile_matches_reference(x, taus):
    out = S.performance_profile(x, taus)
    assert out.shape == (len(taus),)
    np.testing.assert_allclose(out, ref_profile(x, taus), atol=1e-12)


@FAST
@given(xb=scores(batch=4), data=st.data())
def test_batch_axis_equals_loop(xb, data):
    for metric in S.METRICS.values():
        np.testing.assert_allclose(metric(xb), [metric(a) for a in xb], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        S.performance_profile(xb, [0.5, 1.0]), [S.performance_profile(a, [0.5, 1.0]) for a in xb]
    )
    y = data.draw(scores(tasks=xb.shape[2]))  # same tasks as x, its own number of runs
    np.testing.assert_allclose(S.probability_of_improvement(xb, y), [S.probability_of_improvement(a, y) for a in xb])
    both = S.probability_of_improvement(xb, np.stack([y] * len(xb)))
    np.testing.assert_allclose(both, [S.probability_of_improvement(a, y) for a in xb])


def test_metric_known_values():
    x = np.arange(8.0).reshape(4, 2)  # pooled 0..7: drop 0, 1 and 6, 7
    assert float(S.iqm(x)) == 3.5
    assert float(S.median([[0.0, 1.0, 9.0]])) == 1.0
    assert float(S.optimality_gap([[0.5, 2.0]])) == 0.25
    assert float(S.probability_of_improvement([[1.0], [2.0]], [[1.0]])) == 0.75
    with pytest.raises(ConfigError, match="x has 2 tasks and y has 3"):
        S.probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 3)))


# ---- as_scores ---------------------------------------------------------------------------------------------------


def test_as_scores_shapes():
    out = S.as_scores([1, 2, 3])
    assert out.shape == (3, 1) and out.dtype == np.float64
    with pytest.raises(ConfigError, match=r"^scores has shape \(1, 1, 1\)"):
        S.as_scores(np.ones((1, 1, 1)))
    src = np.ones((2, 3))
    assert S.as_scores(src) is not src and S.as_scores(src).shape == (2, 3)


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (np.zeros((2, 3, 4)), r"scores 'grpo' has shape \(2, 3, 4\); expected \(runs,\) or \(runs, tasks\)"),
        (5.0, r"scores 'grpo' has shape \(\); expected"),
        ([], r"scores 'grpo' is empty \(shape \(0, 1\)\)"),
        (np.zeros((0, 3)), r"is empty \(shape \(0, 3\)\)"),
        ([[1.0], [float("nan")]], r"contains NaN at run 1, task 0; every score must be finite"),
        ([[1.0, float("-inf")]], r"contains -inf at run 0, task 1"),
        (["a", "b"], r"scores 'grpo' is not a numeric array"),
        ([[1.0, 2.0], [3.0]], r"scores 'grpo' is not a numeric array"),
    ],
)
def test_as_scores_errors_name_the_value(value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        S.as_scores(value, "scores 'grpo'")


# ---- bootstrap ---------------------------------------------------------------------------------------------------


DATA = np.random.default_rng(7).normal(size=(5, 3))
OTHER = np.random.default_rng(8).normal(size=(4, 3)) + 0.5


def test_bootstrap_is_reproducible_and_seed_dependent():
    a = S.bootstrap_ci(DATA, rng=3, reps=2000)
    assert a == S.bootstrap_ci(DATA, rng=np.random.default_rng(3), reps=2000)
    other = S.bootstrap_ci(DATA, rng=4, reps=2000)
    assert other.point == a.point and (other.low, other.high) != (a.low, a.high)
    b = S.bootstrap_ci_two(DATA, OTHER, S.probability_of_improvement, rng=3)
    assert b == S.bootstrap_ci_two(DATA, OTHER, S.probability_of_improvement, rng=3)
    assert b != S.bootstrap_ci_two(DATA, OTHER, S.probability_of_improvement, rng=4)
    assert a.point == pytest.approx(sps.trim_mean(DATA, 0.25, axis=None))
    assert (a.confidence, a.method, a.reps) == (0.95, "percentile", 2000)


@FAST
@given(x=scores(), seed=st.integers(0, 2**32))
def test_iqm_interval_contains_point(x, seed):
    iv = S.bootstrap_ci(x, S.iqm, rng=seed, reps=300)
    assert iv.low <= iv.point <= iv.high


def test_bootstrap_coverage_of_the_mean():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        iv = S.bootstrap_ci(rng.normal(1.0, 2.0, size=10), S.mean, rng=rng, reps=1000, confidence=0.9)
        hits += iv.low <= 1.0 <= iv.high
    assert 0.80 <= hits / 200 <= 0.97


def test_bootstrap_is_stratified_by_task():
    x = np.array([[0.0, 10.0, 20.0], [1.0, 11.0, 21.0], [2.0, 12.0, 22.0]])
    seen = []

    def record(batch):
        seen.append(batch)
        return batch.mean(axis=(-2, -1))

    S.bootstrap_ci(x, record, rng=0, reps=50)
    batch = np.concatenate(seen[:-1])  # the last call is the point estimate
    for m in range(3):
        assert set(batch[..., m].ravel()) <= set(x[:, m])
    seen.clear()
    S.bootstrap_ci(x, record, rng=0, reps=200, task_bootstrap=True)
    batch = np.concatenate(seen[:-1])
    columns = {tuple(sorted(set(batch[r, :, m]))) for r in range(len(batch)) for m in range(3)}
    assert any(c[0] >= 20 for c in columns) and all(c[-1] - c[0] < 3 for c in columns)  # whole tasks, moved around
    pair = []
    S.bootstrap_ci_two(x, x + 100, lambda a, b: pair.append((a, b)) or a.mean(axis=(-2, -1)), rng=0, reps=20)
    assert pair[0][0].max() < 100 <= pair[0][1].min() and pair[0][1].shape == (20, 3, 3)


def test_task_bootstrap_widens_interval_for_heterogeneous_tasks():
    x = np.array([0.0, 5.0, 10.0, 15.0]) + np.random.default_rng(1).normal(0, 0.1, size=(5, 4))
    runs_only = S.bootstrap_ci(x, S.mean, rng=0, reps=2000)
    with_tasks = S.bootstrap_ci(x, S.mean, rng=0, reps=2000, task_bootstrap=True)
    assert with_tasks.high - with_tasks.low > 10 * (runs_only.high - runs_only.low)
    assert with_tasks.point == runs_only.point


@pytest.mark.parametrize("chunk_elements", [1, 7, 97])
def test_chunking_does_not_change_the_interval(monkeypatch, chunk_elements):
    expected = [
        S.bootstrap_ci(DATA, rng=5, reps=301),
        S.bootstrap_ci(DATA, S.median, rng=5, reps=301, task_bootstrap=True),
        S.bootstrap_ci_two(DATA, OTHER, S.probability_of_improvement, rng=5, reps=301),
    ]
    monkeypatch.setattr(S, "_CHUNK_ELEMENTS", chunk_elements)
    assert S.bootstrap_ci(DATA, rng=5, reps=301) == expected[0]
    assert S.bootstrap_ci(DATA, S.median, rng=5, reps=301, task_bootstrap=True) == expected[1]
    assert S.bootstrap_ci_two(DATA, OTHER, S.probability_of_improvement, rng=5, reps=301) == expected[2]


def test_single_run_gives_degenerate_interval():
    x = np.array([[0.3, 0.9, 0.1]])
    for metric in S.METRICS.values():
        iv = S.bootstrap_ci(x, metric, rng=0, reps=200)
        assert iv.low == iv.high == pytest.approx(iv.point, abs=1e-15)


def test_difference_interval_and_formatting():
    iv = S.bootstrap_ci_two(DATA, OTHER, lambda a, b: S.iqm(a) - S.iqm(b), rng=0)
    assert iv.point == pytest.approx(float(S.iqm(DATA) - S.iqm(OTHER)))
    assert iv.low < iv.point < iv.high
    assert str(S.Interval(0.5123, 0.48, 0.54, 0.95, "percentile", 10)) == "0.512 [0.480, 0.540]"
    assert iv.to_dict() == {"point": iv.point, "low": iv.low, "high": iv.high, "confidence": 0.95,
                            "method": "percentile", "reps": 2000}  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"reps": 0}, "reps is 0; expected an integer >= 1"),
        ({"reps": 2.5}, "reps is 2.5"),
        ({"confidence": 1.0}, "confidence is 1.0; expected a fraction strictly between 0 and 1"),
        ({"confidence": 0}, "confidence is 0"),
        ({"rng": "seed"}, "rng is 'seed'; expected an np.random.Generator or an int seed"),
    ],
)
def test_bootstrap_validation(kwargs, pattern):
    args = {"rng": 0, "reps": 10} | kwargs
    with pytest.raises(ConfigError, match=pattern):
        S.bootstrap_ci(DATA, **args)
    with pytest.raises(ConfigError, match=pattern):
        S.bootstrap_ci_two(DATA, OTHER, S.probability_of_improvement, **args)


def test_bootstrap_two_validation():
    with pytest.raises(ConfigError, match="x has 3 tasks and y has 2"):
        S.bootstrap_ci_two(DATA, OTHER[:, :2], S.probability_of_improvement, rng=0)
    with pytest.raises(ConfigError, match=r"returned shape \(\) for a batch of 10 resamples"):
        S.bootstrap_ci(DATA, lambda b: float(b.mean()), rng=0, reps=10)


# ---- tests -------------------------------------------------------------------------------------------------------


@FAST
@given(xy=pairs(min_runs=2, max_runs=8, max_tasks=1))
def test_welch_matches_scipy(xy):
    x, y = xy
    res = S.welch_test(x, y)
    assert res.test == "welch"
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        assert res.p_value == (1.0 if x.mean() == y.mean() else 0.0) and res.df is None
        return
    # t, p and df do not change when both samples are scaled by one factor; scipy is given the
    # samples scaled to a largest value of 1, since its df squares the variances, which underflow to
    # 0 for values like 1e-150 (scipy then says df = 1 where it is 2)
    scale = max(np.abs(x).max(), np.abs(y).max())
    ref = scipy_welch(x / scale, y / scale)
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)
    assert res.df == pytest.approx(ref.df, rel=1e-9)


def test_welch_constant_samples_have_exactly_zero_variance():
    # hypothesis found this one on numpy 1.x: the strided mean of seven 19s came out 1 ulp off, which left
    # a variance of 1e-29 and t = -1.3e16 where the test is undefined (t = -inf, p = 0)
    constant = np.full((7, 3), 19.0)[:, 1:2]
    res = S.welch_test(np.zeros((2, 1)), constant)
    assert (res.statistic, res.p_value, res.df) == (-math.inf, 0.0, None)
    assert S.paired_t_test(constant, constant - 2.0).statistic == math.inf


def test_welch_hand_worked():
    # x: mean 2, s^2 = 1; y: mean 5, s^2 = 4 -> se^2 = 1/3 + 4/3, t = -3 / sqrt(5/3),
    # df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2)
    res = S.welch_test([1.0, 2.0, 3.0], [3.0, 5.0, 7.0])
    assert res.statistic == pytest.approx(-3 / math.sqrt(5 / 3))
    assert res.df == pytest.approx((25 / 9) / (17 / 18))
    assert res.p_value == pytest.approx(2 * sps.t.sf(3 / math.sqrt(5 / 3), (25 / 9) / (17 / 18)))
    # the same scaled by 1e-150 (variances of 1e-300, whose squares underflow): t and df unchanged
    tiny = S.welch_test([1e-150, 2e-150, 3e-150], [3e-150, 5e-150, 7e-150])
    assert (tiny.statistic, tiny.df) == pytest.approx((res.statistic, res.df), rel=1e-12)


def test_welch_zero_variance():
    assert S.welch_test([1.0, 1.0, 1.0], [1.0, 1.0]) == S.TestResult("welch", 0.0, 1.0, None)
    res = S.welch_test([1.0, 1.0], [2.0, 2.0, 2.0])
    assert (res.statistic, res.p_value, res.df) == (-math.inf, 0.0, None)
    one_sided = S.welch_test([1.0, 1.0, 1.0], [0.0, 1.0, 2.0])  # only one variance is zero: the formula holds
    assert one_sided.p_value == pytest.approx(scipy_welch([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]).pvalue)


def test_test_errors():
    with pytest.raises(ConfigError, match=r"x has 1 run\(s\); the Welch test needs >= 2 per sample"):
        S.welch_test([1.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match=r"y has 2 tasks \(shape \(3, 2\)\)"):
        S.welch_test([1.0, 2.0], np.ones((3, 2)))
    with pytest.raises(ConfigError, match=r"x has 3 tasks"):
        S.mann_whitney_test(np.ones((2, 3)), [1.0])
    with pytest.raises(ConfigError, match=r"contains NaN at run 1"):
        S.mann_whitney_test([1.0, float("nan")], [1.0])


@FAST
@given(xy=pairs(max_runs=8, max_tasks=1))
def test_mann_whitney_matches_scipy_and_loop(xy):
    x, y = xy
    res = S.mann_whitney_test(x, y)
    ref = sps.mannwhitneyu(x[:, 0], y[:, 0], alternative="two-sided")
    assert res.test == "mann-whitney" and res.df is None
    assert res.statistic == ref.statistic == pytest.approx(ref_poi(x, y) * len(x) * len(y), abs=1e-9)
    assert res.p_value == pytest.approx(ref.pvalue)


# ---- multiple comparisons ----------------------------------------------------------------------------------------


def test_corrections_hand_worked():
    p = [0.01, 0.04, 0.03, 0.2]
    np.testing.assert_allclose(S.holm(p), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(S.benjamini_hochberg(p), [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    np.testing.assert_allclose(S.holm([0.6, 0.7, 0.01]), [1.0, 1.0, 0.03])
    np.testing.assert_allclose(S.benjamini_hochberg([0.6, 0.7, 0.01]), [0.7, 0.7, 0.03])
    assert S.holm([]).shape == (0,) and S.benjamini_hochberg([]).shape == (0,)


@pytest.mark.parametrize(
    ("p", "pattern"),
    [
        ([0.1, 1.5], "p-value 1 is 1.5"),
        ([float("nan")], "p-value 0 is nan"),
        ([0.2, 0.3, -0.1], r"p-value 2 is -0.1; every p-value must lie in \[0, 1\]"),
    ],
)
def test_correction_errors(p, pattern):
    for fn in (S.holm, S.benjamini_hochberg):
        with pytest.raises(ConfigError, match=pattern):
            fn(p)


@FAST
@given(p=st.lists(st.floats(0, 1) | st.sampled_from([0.0, 0.01, 0.05, 1.0]), min_size=1, max_size=12))
def test_correction_properties(p):
    p = np.array(p)
    order = np.argsort(p, kind="stable")
    bh = S.benjamini_hochberg(p)
    np.testing.assert_allclose(bh, sps.false_discovery_control(p, method="bh"), rtol=1e-12, atol=1e-15)
    for adjusted in (S.holm(p), bh):
        assert np.all(adjusted >= p) and np.all(adjusted <= 1)
        assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(S.holm(p) >= bh - 1e-15)  # Holm is the more conservative


# ---- power -------------------------------------------------------------------------------------------------------

EFFECTS = [0.5, 0.8, 1.0, 1.5, 2.0, 3.0]
TABLE = [  # methodology.md section 6: seeds per arm at alpha = 0.05
    ("two-sided", 0.8, [64, 26, 17, 9, 6, 4]),
    ("two-sided", 0.9, [86, 34, 23, 11, 7, 4]),
    ("greater", 0.8, [51, 21, 14, 7, 4, 3]),
]


@pytest.mark.parametrize(("alternative", "target", "seeds"), TABLE)
def test_seeds_needed_matches_table(alternative, target, seeds):
    assert [S.seeds_needed(d, target, alternative=alternative) for d in EFFECTS] == seeds
    for d, n in zip(EFFECTS, seeds):
        assert S.power(d, n, alternative=alternative) >= target
        assert n == 2 or S.power(d, n - 1, alternative=alternative) < target


@pytest.mark.parametrize(("n", "d"), [(3, 3.07), (5, 2.03), (10, 1.33), (20, 0.91), (30, 0.74), (50, 0.57)])
def test_min_detectable_effect_matches_table(n, d):
    mde = S.min_detectable_effect(n)
    assert mde == pytest.approx(d, abs=0.01)
    assert S.power(mde, n) == pytest.approx(0.8, abs=1e-9)


def test_power_known_values():
    assert S.power(1.0, 5) == pytest.approx(0.29, abs=0.01)
    assert S.power(2.0, 5) == pytest.approx(0.79, abs=0.01)
    assert S.power(1e-9, 7) == pytest.approx(0.05, abs=1e-6)  # power at d = 0 is alpha
    assert S.power(1e-9, 7, alternative="greater") == pytest.approx(0.05, abs=1e-6)
    # Large n: the noncentral t tends to the normal, power ~ Phi(d sqrt(n/2) - z_{1-alpha}).
    assert S.power(0.1, 1000, alternative="greater") == pytest.approx(
        sps.norm.cdf(0.1 * math.sqrt(500) - sps.norm.ppf(0.95)), abs=1e-3
    )
    assert S.power(5.0, 1000) == 1.0 and S.power(-1.0, 5) == pytest.approx(S.power(1.0, 5))


@FAST
@given(d=st.floats(0.05, 5), target=st.floats(0.1, 0.99), alternative=st.sampled_from(["two-sided", "greater"]))
def test_seeds_needed_is_the_smallest(d, target, alternative):
    n = S.seeds_needed(d, target, alternative=alternative)
    assert S.power(d, n, alternative=alternative) >= target
    assert n == 2 or S.power(d, n - 1, alternative=alternative) < target


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: S.power(1.0, 1), "n is 1; expected an integer number of seeds per arm >= 2"),
        (lambda: S.power(1.0, 5.0), "n is 5.0"),
        (lambda: S.power(1.0, 5, alpha=1.5), "alpha is 1.5; expected a significance level strictly between 0 and 1"),
        (lambda: S.power(1.0, 5, alternative="less"), "alternative is 'less'.*valid: two-sided, greater"),
        (lambda: S.power(1.0, 5, alternative="two_sided"), "did you mean 'two-sided'"),
        (lambda: S.seeds_needed(0.0), "d is 0.0; expected a finite effect size > 0"),
        (lambda: S.seeds_needed(1.0, power=1.0), "power is 1.0; expected a target strictly between 0 and 1"),
        (lambda: S.seeds_needed(0.001), "d = 0.001 needs more than 100000 seeds per arm"),
        (lambda: S.min_detectable_effect(5, power=0.04), "power is 0.04; it must exceed alpha = 0.05"),
        (lambda: S.min_detectable_effect(1), "n is 1"),
    ],
)
def test_power_validation(call, pattern):
    with pytest.raises(ConfigError, match=pattern):
        call()


# --------------------------------------------------------------------------------------------------
# Paired designs (runs paired by seed)


@FAST
@given(
    n=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    shift=st.floats(-2, 2),
    noise=st.floats(0.01, 2),
)
def test_paired_t_matches_scipy(n, seed, shift, noise):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n)
    x = y + shift + noise * rng.normal(size=n)
    got, want = S.paired_t_test(x, y), sps.ttest_rel(x, y)
    assert got.test == "paired-t" and got.df == n - 1
    assert got.statistic == pytest.approx(want.statistic, rel=1e-9) and got.p_value == pytest.approx(
        want.pvalue, rel=1e-9, abs=1e-300
    )


def test_paired_t_constant_differences_and_errors():
    assert S.paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).p_value == 1.0
    shifted = S.paired_t_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert shifted.p_value == 0.0 and shifted.statistic == math.inf
    with pytest.raises(ConfigError, match="x has 3 runs and y has 2; the paired t test needs one y per x"):
        S.paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ConfigError, match="x has 1 run"):
        S.paired_t_test([1.0], [2.0])


def test_paired_power_against_simulation():
    """The noncentral-t power of the paired test, against 20,000 simulated experiments of 8 pairs at d_z = 1."""
    n, d, reps = 8, 1.0, 20_000
    diffs = np.random.default_rng(0).normal(d, 1.0, size=(reps, n))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / np.sqrt(n))
    simulated = float(np.mean(2 * sps.t.sf(np.abs(t), n - 1) < 0.05))
    assert S.power(d, n, paired=True) == pytest.approx(simulated, abs=0.012)
    assert S.power(d, n, paired=True) > S.power(d, n)  # n pairs: df n - 1 but noncentrality d sqrt(n), not d sqrt(n/2)


@FAST
@given(d=st.floats(0.3, 4.0), target=st.floats(0.5, 0.95))
def test_paired_seeds_needed_is_the_smallest_n(d, target):
    n = S.seeds_needed(d, target, paired=True)
    assert S.power(d, n, paired=True) >= target
    assert n == 2 or S.power(d, n - 1, paired=True) < target
    mde = S.min_detectable_effect(n, target, paired=True)
    assert mde <= d + 1e-9 and S.power(mde, n, paired=True) == pytest.approx(target, abs=1e-6)


def test_paired_bootstrap_keeps_the_pairing():
    """y = x + 1 exactly: every paired resample has mean(x) - mean(y) = -1; independent resamples do not."""
    x = np.random.default_rng(3).normal(size=(8, 2))
    diff = lambda a, b: S.mean(a) - S.mean(b)  # noqa: E731
    paired = S.bootstrap_ci_two(x, x + 1.0, diff, rng=0, reps=500, paired=True)
    assert (
        paired.point == pytest.approx(-1.0) and paired.low == pytest.approx(-1.0) and paired.high == pytest.approx(-1.0)
    )
    independent = S.bootstrap_ci_two(x, x + 1.0, diff, rng=0, reps=500)
    assert independent.high - independent.low > 0.5
    with pytest.raises(ConfigError, match=r"paired samples need one shape; x has \(8, 2\) and y has \(7, 2\)"):
        S.bootstrap_ci_two(x, x[:7], diff, rng=0, reps=10, paired=True)
