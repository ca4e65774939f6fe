"""cnnlab.lab.stats against independent references: scipy's t-tests and hand-computed Holm."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from cnnlab.lab import stats

A = [0.912, 0.905, 0.921, 0.917, 0.909]
B = [0.901, 0.899, 0.915, 0.903, 0.902]


def test_paired_difference_equals_scipy_ttest_rel():
    d = stats.paired_difference(A, B)
    ref = sps.ttest_rel(A, B)
    assert d.paired and d.df == 4 and d.n_a == 5
    assert d.effect == pytest.approx(sum(A) / 5 - sum(B) / 5, abs=1e-12)
    assert d.p == pytest.approx(ref.pvalue, rel=1e-9)
    lo, hi = d.ci(0.95)
    ref_ci = ref.confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((ref_ci.low, ref_ci.high), rel=1e-9)


def test_welch_difference_equals_scipy_welch():
    b = B + [0.890, 0.930]
    d = stats.welch_difference(A, b)
    ref = sps.ttest_ind(A, b, equal_var=False)
    assert not d.paired and d.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert d.df == pytest.approx(ref.df, rel=1e-9)


def test_a_pair_with_a_missing_side_is_dropped_together():
    d = stats.paired_difference([1.0, 2.0, math.nan, 4.0], [0.5, 1.0, 3.0, 3.0])
    assert d.n_a == 3 and d.effect == pytest.approx((0.5 + 1.0 + 1.0) / 3)


def test_holm_against_hand_computed_values():
    # sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    assert stats.holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    # a large p caps at 1 and stays monotone
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_holm_leaves_untested_rules_out_of_the_family():
    out = stats.holm([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_holm_controls_the_family_wise_error_where_raw_p_does_not():
    """Seven true-null rules (C19's count): raw p < 0.05 in some rule about 30% of the time,
    Holm keeps it at or below 5%."""
    import random

    rng = random.Random(0)
    trials, raw_hits, holm_hits = 2000, 0, 0
    for _ in range(trials):
        ps = [rng.random() for _ in range(7)]  # p-values are uniform under the null
        raw_hits += min(ps) < 0.05
        holm_hits += min(stats.holm(ps)) <= 0.05
    assert raw_hits / trials > 0.25
    assert holm_hits / trials <= 0.06


def test_detectable_effect_grows_with_the_standard_error_and_matches_the_formula():
    se, df = 0.004, 4
    expected = (sps.t.ppf(0.975, df) + sps.t.ppf(0.8, df)) * se
    assert stats.detectable_effect(se, df) == pytest.approx(expected)
    assert stats.detectable_effect(2 * se, df) == pytest.approx(2 * expected)
    assert math.isnan(stats.detectable_effect(math.nan, 4))


def test_censored_is_never_averaged():
    c = stats.censored([3, 5, None, 4, math.nan], limit=10)
    assert c.reached == 3 and c.n == 5 and c.median == 5  # ordered 3, 4, 5, >10, >10
    assert c.text == "median 5, reached 3/5 by 10"
    half = stats.censored([3, None, None, 2], limit=8)
    assert half.median is None and half.text == "median > 8, reached 2/4 by 8"
    none = stats.censored([None, None], limit=11)
    assert none.text == "not reached by 11 (0/2)"
    # a value past the limit counts as not reached
    assert stats.censored([12, 2, 3], limit=11).reached == 2


def test_no_spread_is_a_rank_test_not_a_certainty():
    """Whole epoch counts: 5 pairs that all differ by exactly one epoch have a t-test standard
    error of 0 (its p would be 0: "certain" from any number of seeds). The sign test's p is
    2 x 0.5^5 = 0.0625, the same as scipy's binomial test."""
    a, b = [5.0] * 5, [4.0] * 5
    d = stats.compare(a, b, paired=True)
    assert d.test == "sign test (no spread)"
    assert d.p == pytest.approx(2 * 0.5 ** 5)
    assert d.p == pytest.approx(sps.binomtest(5, 5, 0.5).pvalue)
    assert d.effect == 1.0 and d.min_p == pytest.approx(0.0625)
    assert stats.compare([3.0] * 4, [3.0] * 4, paired=True).p == 1.0  # nothing differs
    # independent constant arms: Mann-Whitney, 3 vs 3 all apart: 2 / C(6, 3) = 0.1
    w = stats.compare([6.0] * 3, [5.0] * 3, paired=False)
    assert w.test == "Mann-Whitney (no spread)"
    assert w.p == pytest.approx(sps.mannwhitneyu([6.0] * 3, [5.0] * 3, method="exact").pvalue)
    assert w.p == pytest.approx(0.1)
    # values that spread still get the t-test
    assert stats.compare(A, B, paired=True).test == "paired t"
