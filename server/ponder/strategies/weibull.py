"""Two-component Weibull mixture fitted by maximum likelihood (RPC's Reasoning Pruning).

Pure numpy/scipy. docs/strategies.md section 4: L-BFGS-B from w=0.5, k1=1, l1=1, k2=1.5, l2=2 with
bounds w in [0.2, 0.8] and every other parameter >= 0.01; inputs clipped to [1e-12, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import gamma

START = (0.5, 1.0, 1.0, 1.5, 2.0)
BOUNDS = ((0.2, 0.8), (0.01, None), (0.01, None), (0.01, None), (0.01, None))


@dataclass(frozen=True)
class WeibullMixture:
    """Fitted parameters: weight w of component 1, shapes k, scales lam; log-likelihood."""

    w: float
    k1: float
    lam1: float
    k2: float
    lam2: float
    loglik: float

    def means(self) -> tuple[float, float]:
        return (
            self.lam1 * float(gamma(1 + 1 / self.k1)),
            self.lam2 * float(gamma(1 + 1 / self.k2)),
        )

    def posterior_high(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """P(component with the larger mean | x) for each x."""
        xs = clip(x)
        l1 = np.log(self.w) + weibull_logpdf(xs, self.k1, self.lam1)
        l2 = np.log1p(-self.w) + weibull_logpdf(xs, self.k2, self.lam2)
        m1, m2 = self.means()
        high, low = (l1, l2) if m1 >= m2 else (l2, l1)
        return np.asarray(np.exp(high - np.logaddexp(high, low)), dtype=np.float64)


def clip(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.clip(np.asarray(x, dtype=np.float64), 1e-12, 1.0)


def weibull_logpdf(x: npt.NDArray[np.float64], k: float, lam: float) -> npt.NDArray[np.float64]:
    z = x / lam
    return np.asarray(
        math.log(k) - math.log(lam) + (k - 1) * np.log(z) - np.power(z, k), dtype=np.float64
    )


def mixture_loglik(params: npt.ArrayLike, x: npt.NDArray[np.float64]) -> float:
    w, k1, l1, k2, l2 = (float(v) for v in np.asarray(params))
    a = math.log(w) + weibull_logpdf(x, k1, l1)
    b = math.log1p(-w) + weibull_logpdf(x, k2, l2)
    return float(np.logaddexp(a, b).sum())


def _nll_and_grad(
    params: npt.NDArray[np.float64], x: npt.NDArray[np.float64], logx: npt.NDArray[np.float64]
) -> tuple[float, npt.NDArray[np.float64]]:
    """Negative log-likelihood of the mixture and its analytic gradient."""
    w, k1, l1, k2, l2 = (float(v) for v in params)
    terms = []
    for k, lam in ((k1, l1), (k2, l2)):
        logz = logx - math.log(lam)
        zk = np.exp(k * logz)
        logf = math.log(k) - math.log(lam) + (k - 1) * logz - zk
        dk = 1 / k + logz - zk * logz
        dlam = (k / lam) * (zk - 1)
        terms.append((logf, dk, dlam))
    a = math.log(w) + terms[0][0]
    b = math.log1p(-w) + terms[1][0]
    ll = np.logaddexp(a, b)
    r1, r2 = np.exp(a - ll), np.exp(b - ll)
    grad = np.array(
        [
            (r1 / w - r2 / (1 - w)).sum(),
            (r1 * terms[0][1]).sum(),
            (r1 * terms[0][2]).sum(),
            (r2 * terms[1][1]).sum(),
            (r2 * terms[1][2]).sum(),
        ]
    )
    return -float(ll.sum()), -grad


def fit(x: npt.ArrayLike) -> WeibullMixture | None:
    """Maximum-likelihood fit, or None when the optimizer gives a non-finite result."""
    xs = clip(x)
    logx = np.log(xs)

    def objective(params: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        value, grad = _nll_and_grad(params, xs, logx)
        if not (math.isfinite(value) and np.all(np.isfinite(grad))):
            return 1e300, np.zeros(5)
        return value, grad

    with np.errstate(all="ignore"):
        res = minimize(objective, np.array(START), jac=True, method="L-BFGS-B", bounds=BOUNDS)
    params = np.asarray(res.x, dtype=np.float64)
    if not np.all(np.isfinite(params)) or not math.isfinite(res.fun) or res.fun >= 1e300:
        return None
    w, k1, l1, k2, l2 = (float(v) for v in params)
    return WeibullMixture(w, k1, l1, k2, l2, mixture_loglik(params, xs))
