"""Float64 NumPy references, written straight from docs/reference.md.

Full N x N matrices, no tricks: these are the definitions the sharded engines
are checked against. Gradients come from central finite differences in
float64 (error ~1e-9), so they are independent of JAX's autodiff.
"""
import numpy as np


def lse(a, axis):
    m = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def softplus(x):
    return np.logaddexp(0.0, x)


def clip(u, v, s):
    n = len(u)
    logits = s * u @ v.T
    i2t = np.mean(lse(logits, 1) - np.diag(logits))
    t2i = np.mean(lse(logits, 0) - np.diag(logits))
    assert logits.shape == (n, n)
    return 0.5 * (i2t + t2i)


def sigmoid(u, v, s, b):
    n = len(u)
    z = 2.0 * np.eye(n) - 1.0
    return np.sum(softplus(-z * (s * u @ v.T + b))) / n


def dcl(u, v, s):
    logits = s * u @ v.T
    off = np.where(np.eye(len(u), dtype=bool), -np.inf, logits)
    return 0.5 * (np.mean(lse(off, 1) - np.diag(logits)) + np.mean(lse(off, 0) - np.diag(logits)))


def slerp(a, b, lam):
    lam = np.asarray(lam, np.float64)
    lam = lam[:, None] if lam.ndim == 1 else lam
    theta = np.arccos(np.clip(np.sum(a * b, -1, keepdims=True), -1 + 1e-7, 1 - 1e-7))
    return np.sin(lam * theta) / np.sin(theta) * a + np.sin((1 - lam) * theta) / np.sin(theta) * b


def _ce_rows(pos, neg):
    """CE with the positive logit on the diagonal and neg[i, j] (j != i) elsewhere."""
    rows = np.where(np.eye(len(pos), dtype=bool), pos[:, None], neg)
    return np.mean(lse(rows, 1) - pos)


def m2mix(u, v, s, lam, mix_scale=None):
    s2 = s if mix_scale is None else mix_scale
    m = slerp(u, v, lam)
    pos = s * np.sum(u * v, -1)
    return 0.5 * (_ce_rows(pos, s2 * u @ m.T) + _ce_rows(pos, s2 * v @ m.T))


def unimodal_mix(x, y, s, lam):
    """x mixed with its reversal, scored against y with soft targets."""
    n = len(x)
    pi = np.arange(n)[::-1]
    m = slerp(x, x[pi], lam)
    logits = s * m @ y.T
    lam = np.broadcast_to(np.asarray(lam, np.float64), (n,))
    target = np.zeros((n, n))
    target[np.arange(n), np.arange(n)] += lam
    target[np.arange(n), pi] += 1 - lam
    return np.mean(lse(logits, 1) - np.sum(target * logits, 1))


def alignment(x, y, alpha=2.0):
    return np.mean(np.linalg.norm(x - y, axis=-1) ** alpha)


def cross_uniformity(x, y, t=2.0):
    n = len(x)
    d2 = np.sum((x[:, None, :] - y[None, :, :]) ** 2, -1)
    off = ~np.eye(n, dtype=bool)
    return np.log(np.sum(np.exp(-t * d2[off])) / (n * (n - 1)))


def uniformity(x, t=2.0):
    return cross_uniformity(x, x, t)


def numeric_grad(f, args, h=1e-6):
    """Central-difference gradient of scalar f with respect to every arg (float64)."""
    args = [np.array(a, np.float64) for a in args]
    grads = []
    for k, a in enumerate(args):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [x.copy() for x in args]
            minus = [x.copy() for x in args]
            plus[k][idx] += h
            minus[k][idx] -= h
            g[idx] = (f(*plus) - f(*minus)) / (2 * h)
        grads.append(g)
    return grads
