"""Statistics for the selection analysis and its companions (numpy + scipy, no JAX).

* :func:`paired_ttest` - the paper's paired t-test over retained/full pairs (``scipy.stats.ttest_rel``).
* :func:`corrected_resampled_ttest` - Nadeau & Bengio (2003): the cross-validation splits share
  training data, so the variance of the mean difference is inflated by ``(1/J + n_test/n_train)``
  instead of ``1/J``.
* :func:`loftus_masson_se` - within-subject standard errors (Loftus & Masson 1994) with the splits
  as subjects and the conditions (full / retained) as the within factor.
* :func:`mean_retained_size` - mean m* over the splits where it is defined.

(The Aim 2 statistics - KS tests, mean absolute deviation, softmax entropy - live in
:mod:`ais_jax.aim2`.)

NaN handling: the paired tests drop pairs where either value is NaN and report how many were
dropped (``n_dropped``), never silently.
"""

from __future__ import annotations

import dataclasses
import numpy as np
import scipy.stats

ALTERNATIVES = ("two-sided", "greater", "less")


@dataclasses.dataclass(frozen=True)
class TTest:
  """A t-test of ``mean(a - b) = 0``.

  Attributes:
    statistic: t.
    pvalue: p for ``alternative``.
    df: degrees of freedom (J - 1).
    mean_difference: mean of ``a - b``.
    n: pairs used; n_dropped: pairs dropped because a value was NaN.
    alternative: 'two-sided' | 'greater' (mean(a - b) > 0) | 'less'.
  """
  statistic: float
  pvalue: float
  df: float
  mean_difference: float
  n: int
  n_dropped: int
  alternative: str

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def _pairs(a, b):
  a = np.asarray(a, np.float64).ravel()
  b = np.asarray(b, np.float64).ravel()
  if a.shape != b.shape:
    raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
  ok = ~(np.isnan(a) | np.isnan(b))
  if ok.sum() < 2:
    raise ValueError(f"need at least 2 pairs without NaN, got {int(ok.sum())}")
  return a[ok], b[ok], int((~ok).sum())


def _check_alternative(alternative):
  if alternative not in ALTERNATIVES:
    raise ValueError(f"alternative={alternative!r} is not one of {ALTERNATIVES}")


def paired_ttest(a, b, *, alternative: str = "two-sided") -> TTest:
  """Paired t-test of ``a`` against ``b`` (e.g. retained vs full test r^2): ``scipy.stats.ttest_rel``.

  Args:
    a, b: ``[J]`` paired values; pairs with a NaN are dropped (counted in ``n_dropped``).
    alternative: 'two-sided' (the paper) | 'greater' | 'less' (one-tailed, on ``a - b``).
  """
  _check_alternative(alternative)
  a, b, dropped = _pairs(a, b)
  res = scipy.stats.ttest_rel(a, b, alternative=alternative)
  return TTest(float(res.statistic), float(res.pvalue), float(a.size - 1), float(np.mean(a - b)),
               int(a.size), dropped, alternative)


def corrected_resampled_ttest(a, b, *, n_train, n_test, alternative: str = "two-sided") -> TTest:
  """Corrected resampled t-test (Nadeau & Bengio 2003) for paired scores from overlapping splits.

  ``t = mean(d) / sqrt((1/J + n_test/n_train) * var(d))`` with ``d = a - b``, ``var`` with
  ``ddof=1``, J pairs, t-distribution with ``J - 1`` degrees of freedom.

  Args:
    a, b: ``[J]`` paired scores.
    n_train, n_test: training and test set sizes (images for image folds, pairs for pair splits);
      scalars or ``[J]`` (their mean ratio is used when they vary by split).
  """
  _check_alternative(alternative)
  ratio = float(np.mean(np.asarray(n_test, np.float64) / np.asarray(n_train, np.float64)))
  a, b, dropped = _pairs(a, b)
  d = a - b
  j = d.size
  var = np.var(d, ddof=1)
  mean = float(np.mean(d))
  se = np.sqrt((1.0 / j + ratio) * var)
  # No spread: t is undefined for a zero mean and infinite otherwise (no division happens).
  t = mean / se if se > 0 else (np.nan if mean == 0 else np.copysign(np.inf, mean))
  dist = scipy.stats.t(df=j - 1)
  if alternative == "two-sided":
    p = 2 * dist.sf(abs(t))
  elif alternative == "greater":
    p = dist.sf(t)
  else:
    p = dist.cdf(t)
  return TTest(float(t), float(p), float(j - 1), mean, int(j), dropped, alternative)


@dataclasses.dataclass(frozen=True)
class WithinSubjectError:
  """Loftus-Masson within-subject error: the same ``se`` for every condition.

  Attributes:
    means: ``[C]`` condition means.
    se: ``sqrt(MS_{subject x condition} / J)``.
    ci_halfwidth: ``t_{0.975}(df) * se`` (95% interval).
    df: ``(J - 1)(C - 1)``.
    n_subjects: J rows used (rows with a NaN are dropped); n_dropped.
  """
  means: np.ndarray
  se: float
  ci_halfwidth: float
  df: int
  n_subjects: int
  n_dropped: int


def loftus_masson_se(data, *, confidence: float = 0.95) -> WithinSubjectError:
  """Within-subject standard error (Loftus & Masson 1994).

  Args:
    data: ``[J, C]``: rows = subjects (here: splits), columns = conditions (full, retained).
      Rows with a NaN are dropped.

  The interaction mean square of the two-way subject x condition table,
  ``MS = sum_jc (x_jc - row_j - col_c + grand)^2 / ((J - 1)(C - 1))``, gives
  ``se = sqrt(MS / J)``.
  """
  x = np.asarray(data, np.float64)
  if x.ndim != 2 or x.shape[1] < 2:
    raise ValueError(f"data: expected [subjects, conditions>=2], got shape {x.shape}")
  ok = ~np.isnan(x).any(axis=1)
  x = x[ok]
  j, c = x.shape
  if j < 2:
    raise ValueError(f"need at least 2 subjects without NaN, got {j}")
  resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0) + x.mean()
  df = (j - 1) * (c - 1)
  ms = float(np.sum(resid ** 2) / df)
  se = float(np.sqrt(ms / j))
  half = float(scipy.stats.t.ppf(0.5 + confidence / 2, df) * se)
  return WithinSubjectError(x.mean(axis=0), se, half, df, j, int((~ok).sum()))


def mean_retained_size(m_star) -> float:
  """Mean m* over the splits where it is defined (m* = 0 marks an undefined split)."""
  m = np.asarray(m_star, np.float64)
  m = m[m > 0]
  return float(m.mean()) if m.size else float("nan")
