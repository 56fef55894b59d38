"""The tests' only brute-force float64 NumPy references, written from docs/math.md, not from the package.

linear                          a^T b
polynomial(degree, c, scale)    (scale a^T b + c)^degree
gaussian(sigma)                 exp(-||a - b||^2 / (2 sigma^2))
laplacian(sigma)                exp(-||a - b|| / sigma)
energy                          ||a|| + ||b|| - ||a - b||
sum_of, product_of, scaled      compositions, entry by entry
kernel_matrix, mmd2             by plain loops over pairs
gram_style_loss                 Gatys' formula, with feature maps F = samples transposed
sliced_wasserstein              sorted projections; unequal sizes by np.interp of the quantiles
gaussian_w2                     means and covariances, square roots by scipy.linalg.sqrtm
cmd                             channel moments by np.mean, Euclidean norms
"""

from collections.abc import Callable

import numpy as np
import scipy.linalg

KernelFunction = Callable[[np.ndarray, np.ndarray], float]


def kernel_matrix(function: KernelFunction, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The kernel matrix by a plain double loop."""
    return np.array([[function(a, b) for b in y] for a in x], dtype=np.float64).reshape(len(x), len(y))


def mmd2(function: KernelFunction, x: np.ndarray, y: np.ndarray, estimator: str) -> float:
    """MMD^2 by the definitions of Gretton et al. (2012), one kernel evaluation per pair."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    m, n = len(x), len(y)
    if estimator == "linear":
        pairs = min(m, n) // 2
        h = [
            function(x[2 * p], x[2 * p + 1])
            + function(y[2 * p], y[2 * p + 1])
            - function(x[2 * p], y[2 * p + 1])
            - function(x[2 * p + 1], y[2 * p])
            for p in range(pairs)
        ]
        return float(np.mean(h))
    kxx, kyy, kxy = (
        kernel_matrix(function, x, x),
        kernel_matrix(function, y, y),
        kernel_matrix(function, x, y),
    )
    if estimator == "biased":
        return float(kxx.sum() / m**2 + kyy.sum() / n**2 - 2 * kxy.sum() / (m * n))
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.sum() / (m * n))


def gram_style_loss(x: np.ndarray, y: np.ndarray) -> float:
    """Gatys et al.: ||G_x - G_y||_F^2 / (4 N^2 M^2) with G = F F^T, F = samples transposed."""
    f, p = np.asarray(x, np.float64).T, np.asarray(y, np.float64).T
    channels, positions = f.shape
    return float(np.sum((f @ f.T - p @ p.T) ** 2) / (4.0 * channels**2 * positions**2))


def linear(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def polynomial(degree: int, c: float = 0.0, scale: float = 1.0) -> KernelFunction:
    return lambda a, b: float((scale * (a @ b) + c) ** degree)


def gaussian(sigma: float) -> KernelFunction:
    return lambda a, b: float(np.exp(-np.sum((a - b) ** 2) / (2.0 * sigma**2)))


def laplacian(sigma: float) -> KernelFunction:
    return lambda a, b: float(np.exp(-np.sqrt(np.sum((a - b) ** 2)) / sigma))


def energy(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a) + np.linalg.norm(b) - np.linalg.norm(a - b))


def l1_exponential(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.exp(-np.sum(np.abs(a - b))))


def cubic(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.sum(a * b) + 1.0) ** 3)


def sum_of(f: KernelFunction, g: KernelFunction) -> KernelFunction:
    return lambda a, b: f(a, b) + g(a, b)


def product_of(f: KernelFunction, g: KernelFunction) -> KernelFunction:
    return lambda a, b: f(a, b) * g(a, b)


def scaled(factor: float, f: KernelFunction) -> KernelFunction:
    return lambda a, b: factor * f(a, b)


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, directions: np.ndarray) -> float:
    """Mean squared difference of the sorted projections; for m != n, the smaller set's quantile
    function (linear between its levels (j + 1/2)/n, constant outside) at the larger's levels."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < len(y):
        x, y = y, x
    total = 0.0
    for direction in np.asarray(directions, np.float64):
        large, small = np.sort(x @ direction), np.sort(y @ direction)
        levels = (np.arange(len(large)) + 0.5) / len(large)
        quantiles = np.interp(levels, (np.arange(len(small)) + 0.5) / len(small), small)
        total += np.mean((large - quantiles) ** 2)
    return total / len(directions)


def gaussian_w2(x: np.ndarray, y: np.ndarray, epsilon: float) -> float:
    """mean_c (mu_x - mu_y)^2 + tr(S_x + S_y - 2 (S_y^1/2 S_x S_y^1/2)^1/2) / d, population covariances."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]
    s_x = np.cov(x, rowvar=False, bias=True).reshape(d, d) + epsilon * np.eye(d)
    s_y = np.cov(y, rowvar=False, bias=True).reshape(d, d) + epsilon * np.eye(d)
    root_y = np.real(scipy.linalg.sqrtm(s_y))
    cross = np.real(scipy.linalg.sqrtm(root_y @ s_x @ root_y))
    return float(np.mean((x.mean(0) - y.mean(0)) ** 2) + np.trace(s_x + s_y - 2.0 * cross) / d)


def cmd(x: np.ndarray, y: np.ndarray, order: int, squash: bool) -> float:
    """sum_{k=1..order} |c_k(x) - c_k(y)|_2, c_1 the means, c_k the central moments, after a sigmoid."""

    def moments(samples: np.ndarray) -> list[np.ndarray]:
        samples = np.asarray(samples, np.float64)
        if squash:
            samples = 1.0 / (1.0 + np.exp(-samples))
        mean = samples.mean(axis=0)
        return [mean] + [np.mean((samples - mean) ** k, axis=0) for k in range(2, order + 1)]

    return float(sum(np.linalg.norm(a - b) for a, b in zip(moments(x), moments(y), strict=True)))
