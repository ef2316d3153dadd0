"""Summaries of repeated measurements (accuracy over evaluation seeds): the mean, the sample
standard deviation (n - 1) and the 95% Student-t interval of the mean, without scipy.

The t quantiles t_{0.975, df} are tabulated for df <= 30 (the usual table, three decimals);
above that the Cornish-Fisher expansion in 1/df is used, within 1e-4 of the exact value there.
"""

from __future__ import annotations

import math
import statistics

# t_{0.975} for df = 1..30.
T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
Z975 = 1.959963984540054  # the standard normal's 0.975 quantile


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom."""
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df must be an integer >= 1, got {df!r}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def summarise(values) -> dict:
    """{"mean", "std", "ci95"} of `values`: the sample std (n - 1) and the 95% t-interval
    [low, high] of the mean. With one value there is no spread to measure: std and ci95 are
    None (not 0, which would claim a spread of zero)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("summarise needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return {"mean": mean, "std": None, "ci95": None}
    std = statistics.stdev(values)
    half = t975(len(values) - 1) * std / math.sqrt(len(values))
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half]}
