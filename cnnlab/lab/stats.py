"""Statistics a verdict rests on, as plain functions of numbers: tests of a difference (paired by
seed, or Welch's for independent arms), Holm-Bonferroni over the rules of one claim, the smallest
effect an experiment could have detected, and censored measures (a target not reached within the
epochs is "not reached by epoch N", never a number to average).

References: S. Holm, "A simple sequentially rejective multiple test procedure", Scandinavian
Journal of Statistics 6 (1979); B. L. Welch, "The generalization of Student's problem when
several different population variances are involved", Biometrika 34 (1947); J. Cohen,
"Statistical Power Analysis for the Behavioral Sciences" (1988), ch. 2 for the power relation.
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

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        half = _t_quantile(0.5 + level / 2, self.df) * self.se
        return self.effect - half, self.effect + half


def _t_quantile(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df)) if df > 0 and math.isfinite(df) else math.nan


def _p_two_sided(t: float, df: float) -> float:
    from scipy import stats

    if not math.isfinite(t) or df <= 0:
        return math.nan
    return float(2 * stats.t.sf(abs(t), df))


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
    # identical differences on every seed: no spread, so any non-zero mean is certain
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
    return (_t_quantile(1 - alpha / 2, df) + _t_quantile(power, df)) * se


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
