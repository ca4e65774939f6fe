"""Statistics a verdict rests on, as plain functions of numbers: tests of a difference (paired by
seed, or Welch's for independent arms), Holm-Bonferroni over the rules of one claim, the smallest
effect an experiment could have detected, and censored measures (a target not reached within the
epochs is "not reached by epoch N", never a number to average).

Every comparison (Difference, RankDifference) answers the same questions, so a verdict rule needs
no case for each test: the effect, its confidence interval, and the one-sided p-values that the
true effect lies above or below a value c (`p_above(c)`, `p_below(c)`); a two-sided test of "no
difference" is 2 * min(p_above(0), p_below(0)), and a range [low, high] is settled by the same
p-values at its bounds (see `range_p`). Censored values (a time to target of a run that never
reached it: only a lower bound is known) go to rank tests that use nothing but the order, which
censoring leaves intact: the sign test for pairs, the Mann-Whitney (Gehan) test for independent
arms, each with the order-statistic interval that inverts it.

References: S. Holm, "A simple sequentially rejective multiple test procedure", Scandinavian
Journal of Statistics 6 (1979); B. L. Welch, "The generalization of Student's problem when
several different population variances are involved", Biometrika 34 (1947); J. Cohen,
"Statistical Power Analysis for the Behavioral Sciences" (1988), ch. 2 for the power relation;
E. A. Gehan, "A generalized Wilcoxon test for comparing arbitrarily singly-censored samples",
Biometrika 52 (1965); M. Hollander and D. A. Wolfe, "Nonparametric Statistical Methods" (1999),
ch. 3-4 for the sign-test and Mann-Whitney intervals (order statistics of the differences).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Difference:
    """The mean difference a - b, its standard error, degrees of freedom and two-sided p-value."""

    effect: float
    se: float
    df: float
    p: float
    n_a: int
    n_b: int
    paired: bool

    @property
    def test(self) -> str:
        return "paired t" if self.paired else "Welch t"

    min_p = 0.0  # a t-test reaches any p if the effect is large enough

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        if self.se == 0:
            return self.effect, self.effect
        half = t_quantile(0.5 + level / 2, self.df) * self.se
        return self.effect - half, self.effect + half

    def p_above(self, c: float = 0.0) -> float:
        """One-sided p of "the true effect is at most c": small when it is clearly above c."""
        return self._one_sided(self.effect - c)

    def p_below(self, c: float = 0.0) -> float:
        """One-sided p of "the true effect is at least c": small when it is clearly below c."""
        return self._one_sided(c - self.effect)

    def _one_sided(self, excess: float) -> float:
        if not (math.isfinite(self.se) and self.df > 0 and math.isfinite(excess)):
            return math.nan
        if self.se == 0:  # the same difference in every pair: certain either way
            return 0.0 if excess > 0 else 1.0
        return _t_sf(excess / self.se, self.df)


def t_quantile(q: float, df: float) -> float:
    """Student t's q-quantile (scipy.special.stdtrit: what scipy.stats.t.ppf computes, without
    the distribution object's overhead, which a simulation of thousands of verdicts feels)."""
    from scipy import special

    return float(special.stdtrit(df, q)) if df > 0 and math.isfinite(df) else math.nan


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student t with df degrees of freedom (scipy.stats.t.sf)."""
    from scipy import special

    return float(special.stdtr(df, -t))


def _p_two_sided(t: float, df: float) -> float:
    if not math.isfinite(t) or df <= 0:
        return math.nan
    return 2 * _t_sf(abs(t), df)


def _clean(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Arms that share seeds (and so data order and initialisation): the t-test of the per-seed
    differences a_i - b_i. Pairs with a missing value on either side are dropped together."""
    pairs = [(float(x), float(y)) for x, y in zip(a, b)
             if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))]
    n = len(pairs)
    diffs = [x - y for x, y in pairs]
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return Difference(mean, math.nan, 0, math.nan, n, n, True)
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    se = math.sqrt(var / n)
    # identical differences on every seed: the t-test has nothing to go on (compare() then uses
    # the sign test, `no_spread`); taken at its word it calls any non-zero mean certain
    p = _p_two_sided(mean / se, n - 1) if se > 0 else (0.0 if mean else 1.0)
    return Difference(mean, se, n - 1, p, n, n, True)


def welch_difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """Independent arms: Welch's t-test of mean(a) - mean(b) with Welch-Satterthwaite degrees of
    freedom (no equal-variance assumption)."""
    a, b = _clean(a), _clean(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        effect = (sum(a) / na if na else math.nan) - (sum(b) / nb if nb else math.nan)
        return Difference(effect, math.nan, 0, math.nan, na, nb, False)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se = math.sqrt(va + vb)
    effect = ma - mb
    if se == 0:
        return Difference(effect, 0.0, na + nb - 2, 0.0 if effect else 1.0, na, nb, False)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return Difference(effect, se, df, _p_two_sided(effect / se, df), na, nb, False)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given: the k-th smallest p is multiplied
    by (m - k + 1), then made monotone (an adjusted p is never below the one before it) and
    capped at 1. A rule is significant at family-wise level alpha when its adjusted p <= alpha.
    A NaN p (a rule that could not be tested) is left out of the family and stays NaN."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p))
    m = len(tested)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for k, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def detectable_effect(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true difference a two-sided t-test at level alpha would find with the given
    power, for this standard error: (t_{1-alpha/2} + t_{power}) * se (Cohen 1988, ch. 2)."""
    if not (math.isfinite(se) and df > 0):
        return math.nan
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * se


@dataclass(frozen=True)
class Censored:
    """A time-to-target measure over seeds where some runs never reached the target."""

    n: int
    reached: int
    limit: float  # the last epoch (or second) observed: unreached runs are "> limit"
    median: Optional[float]  # None when half or more of the runs never reached the target

    @property
    def text(self) -> str:
        if self.reached == 0:
            return f"not reached by {self.limit:g} (0/{self.n})"
        median = f"median {self.median:g}" if self.median is not None else f"median > {self.limit:g}"
        return f"{median}, reached {self.reached}/{self.n} by {self.limit:g}"


def censored(values: Sequence[Optional[float]], limit: float) -> Censored:
    """Summarise times to a target where None, NaN or a value above `limit` means "not reached".
    The median is an order statistic, which stays correct under right-censoring as long as more
    than half of the runs reached the target; a mean would not be."""
    n = len(values)
    seen = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)) and float(v) <= limit)
    reached = len(seen)
    median = None
    if reached * 2 > n:  # the median lies among the observed values
        ordered = seen + [math.inf] * (n - reached)
        mid = n // 2
        median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        median = None if math.isinf(median) else median
    return Censored(n, reached, float(limit), median)


def two_sided(d) -> tuple[float, int]:
    """(p, direction) of "no difference": 2 x the smaller one-sided p (capped at 1), and +1 when
    the data point above zero, -1 below, 0 when they cannot tell (NaN p: not testable)."""
    above, below = d.p_above(0.0), d.p_below(0.0)
    if math.isnan(above) or math.isnan(below):
        return math.nan, 0
    direction = 1 if above < below else -1 if below < above else 0
    return min(1.0, 2 * min(above, below)), direction


def range_p(d, low: Optional[float], high: Optional[float]) -> tuple[float, int]:
    """(p, direction) of "the effect lies in [low, high]" (either bound may be None). Inside:
    p = 2 x the larger of the one-sided p's that it is above low and below high, so p <= alpha
    exactly when the (1 - alpha) interval lies inside (two one-sided tests); direction +1.
    Outside: p = 2 x the one-sided p that it is below low (or above high); direction -1. At most
    one of the two is below 1, so the smaller is the test of the side the data point to."""
    inside = max(d.p_above(low) if low is not None else 0.0, d.p_below(high) if high is not None else 0.0)
    outside = min(d.p_below(low) if low is not None else 1.0, d.p_above(high) if high is not None else 1.0)
    if math.isnan(inside) or math.isnan(outside):
        return math.nan, 0
    p_in, p_out = min(1.0, 2 * inside), min(1.0, 2 * outside)
    return (p_in, 1) if p_in <= p_out else (p_out, -1)


@dataclass(frozen=True)
class RankDifference:
    """a - b where some values are censored (known only to be at least some bound). Each
    difference is an interval [low, high] (-inf/inf: unbounded on that side): the sign test
    counts the pairs whose interval lies above or below c (the others drop out), the Mann-Whitney
    (Gehan) test every a-b pair (an undecided pair counts half). The effect is the median of the
    differences (NaN when censoring leaves it open: `bounds` then holds what is known)."""

    lows: tuple
    highs: tuple
    n_a: int
    n_b: int
    paired: bool
    censored: bool = True  # False: exact values with no spread (see `no_spread`)
    se = math.nan
    df = 0

    @property
    def test(self) -> str:
        why = "censored" if self.censored else "no spread"
        return f"sign test ({why})" if self.paired else f"Mann-Whitney ({why})"

    @property
    def bounds(self) -> tuple[float, float]:
        return _median(sorted(self.lows)), _median(sorted(self.highs))

    @property
    def effect(self) -> float:
        lo, hi = self.bounds
        return lo if lo == hi and math.isfinite(lo) else math.nan

    @property
    def p(self) -> float:
        return two_sided(self)[0]

    @property
    def min_p(self) -> float:
        """The smallest two-sided p this many runs can give, however large the effect."""
        if self.paired:
            return min(1.0, 2 * 0.5 ** len(self.lows))
        return min(1.0, 2 / math.comb(self.n_a + self.n_b, self.n_a)) if self.n_a and self.n_b else 1.0

    def p_above(self, c: float = 0.0) -> float:
        wins = sum(lo > c for lo in self.lows)
        losses = sum(hi < c for hi in self.highs)
        return self._tail(wins, losses)

    def p_below(self, c: float = 0.0) -> float:
        wins = sum(lo > c for lo in self.lows)
        losses = sum(hi < c for hi in self.highs)
        return self._tail(losses, wins)

    def _tail(self, k: int, other: int) -> float:
        """P(a null count >= k): binomial over the decided pairs, or the Mann-Whitney U law (an
        undecided a-b pair counts half, which only makes the test more cautious)."""
        if self.paired:
            from scipy import stats

            n = k + other
            return float(stats.binom.sf(k - 1, n, 0.5)) if n else 1.0
        u = k + (len(self.lows) - k - other) / 2
        counts = _u_counts(self.n_a, self.n_b)
        return sum(counts[math.ceil(u - 1e-9):]) / sum(counts)

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """The k-th smallest lower bound and k-th largest upper bound of the differences, k the
        order statistic that inverts the test at this level (unbounded when even the extreme
        order statistic would not reach it)."""
        k = _order_k(self.n_a, self.n_b, self.paired, (1 - level) / 2)
        if k == 0:
            return -math.inf, math.inf
        return sorted(self.lows)[k - 1], sorted(self.highs)[-k]


def _median(xs: list[float]) -> float:
    n = len(xs)
    if n == 0:
        return math.nan
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _u_counts(n_a: int, n_b: int) -> tuple[int, ...]:
    """How many of the C(n_a + n_b, n_a) orderings of two untied samples give each Mann-Whitney
    U = 0 .. n_a * n_b (pairs where a is larger)."""
    from functools import lru_cache

    @lru_cache(maxsize=None)
    def f(i: int, j: int) -> tuple[int, ...]:
        if i == 0 or j == 0:
            return (1,) + (0,) * (i * j)
        # the largest value is an a (beating all j b's) or a b
        with_a, with_b = f(i - 1, j), f(i, j - 1)
        return tuple((with_a[u - j] if u >= j else 0) + (with_b[u] if u < len(with_b) else 0)
                     for u in range(i * j + 1))

    return f(n_a, n_b)


def _order_k(n_a: int, n_b: int, paired: bool, tail: float) -> int:
    """The largest k with P(null count <= k - 1) <= tail (0: no finite interval)."""
    if paired:
        from scipy import stats

        k = 0
        while k < n_a and stats.binom.cdf(k, n_a, 0.5) <= tail:
            k += 1
        return k
    counts = _u_counts(n_a, n_b)
    total, cum, k = sum(counts), 0, 0
    for c in counts:
        cum += c
        if cum / total > tail:
            break
        k += 1
    return k


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


def censored_paired(a: Sequence[float], a_open: Sequence[bool], b: Sequence[float],
                    b_open: Sequence[bool], censored: bool = True) -> RankDifference:
    """Pairs where a value flagged open is only a lower bound: a_i - b_i is [a - b, a - b] when
    both were observed, [a - b, inf) when only a is open, (-inf, a - b] when only b is, and
    unbounded when both are. Pairs with a missing value drop out."""
    lows, highs = [], []
    for x, xo, y, yo in zip(a, a_open, b, b_open):
        if not (_finite(x) and _finite(y)):
            continue
        d = float(x) - float(y)
        lows.append(-math.inf if yo else d)
        highs.append(math.inf if xo else d)
    return RankDifference(tuple(lows), tuple(highs), len(lows), len(lows), True, censored)


def censored_independent(a: Sequence[float], a_open: Sequence[bool], b: Sequence[float],
                         b_open: Sequence[bool], censored: bool = True) -> RankDifference:
    """Independent arms with open (censored) values: every a_i - b_j as an interval, as in
    `censored_paired`."""
    xs = [(float(x), bool(o)) for x, o in zip(a, a_open) if _finite(x)]
    ys = [(float(y), bool(o)) for y, o in zip(b, b_open) if _finite(y)]
    lows = tuple(-math.inf if yo else x - y for x, _ in xs for y, yo in ys)
    highs = tuple(math.inf if xo else x - y for x, xo in xs for y, _ in ys)
    return RankDifference(lows, highs, len(xs), len(ys), False, censored)


def no_spread(a: Sequence[float], b: Sequence[float], paired: bool) -> RankDifference:
    """The rank test of values with no spread to estimate (the same difference on every seed, or
    two arms that are each constant: whole epoch counts often are). A t-test's standard error is
    then 0 and its p would be 0 for any non-zero difference, with 2 seeds as with 20; the sign
    test (paired) or Mann-Whitney test asks only how often a beats b, so 5 pairs that all differ
    by one epoch give p = 2 x 0.5^5 = 0.0625, and the verdict says how many seeds it would take."""
    closed = [False] * max(len(a), len(b))
    return (censored_paired if paired else censored_independent)(a, closed, b, closed, censored=False)


def compare(a: Sequence[float], b: Sequence[float], paired: bool,
            a_open: Optional[Sequence[bool]] = None, b_open: Optional[Sequence[bool]] = None,
            exact: bool = False):
    """The comparison of a with b: a t-test (paired or Welch) when every value was observed and
    they spread, a rank test when some are open (censored) or there is no spread (`no_spread`).
    Paired inputs are aligned pair by pair. `exact`: the values are calculations (the same for
    every seed by construction, as a parameter count is), so a difference with no spread is
    certain and the t-test's p of 0 stands."""
    a_open = list(a_open) if a_open is not None else [False] * len(a)
    b_open = list(b_open) if b_open is not None else [False] * len(b)
    if any(a_open) or any(b_open):
        return (censored_paired if paired else censored_independent)(a, a_open, b, b_open)
    d = paired_difference(a, b) if paired else welch_difference(a, b)
    # no spread, up to float rounding (0.71 - 0.51 and 0.72 - 0.52 differ in the 17th digit)
    scale = max([abs(float(x)) for x in (*_clean(a), *_clean(b))] or [1.0])
    return no_spread(a, b, paired) if d.se <= 1e-12 * scale and not exact else d
