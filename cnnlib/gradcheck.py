"""Numerical gradient checks by central differences.

Use float64: with float32 the rounding error of f(x +- h) is about 1e-7 * |f|,
divided by 2h that swamps the derivative and raises false alarms.
Rule of thumb for ``relative_error``: < 1e-7 correct, 1e-7 .. 1e-4 look closer
(kinks of ReLU/max near a sample), > 1e-2 the gradient is wrong.

A false alarm to know: with zero biases, a convolution over a black (all-zero)
background outputs exactly 0, right on ReLU's kink, where the two one-sided
derivatives differ; give the biases small random values before checking a
network on real images (notebook 07 does).
"""
import numpy as np

__all__ = ["numerical_gradient", "relative_error", "check_layer", "check_net"]


def numerical_gradient(f, x, h=1e-6):
    """dF/dx by central differences: (f(x + h e_i) - f(x - h e_i)) / 2h per element.

    f: a function of no arguments returning a float, that reads ``x``;
    x: the float array to perturb (changed in place and restored).
    """
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"numerical_gradient: expected a float array, got dtype {x.dtype}")
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient: x must be contiguous so it can be changed in place")
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        f_plus = f()
        flat[i] = old - h
        f_minus = f()
        flat[i] = old
        gflat[i] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(a, b):
    """||a - b|| / max(||a|| + ||b||, 1e-30) over whole arrays.

    A norm over the whole array, not a maximum over elements: entries that are
    both ~0 would otherwise turn rounding noise into a large 'error'.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {b.shape}")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-30))


def _frozen_rng(layer):
    """Make a layer that draws random numbers (Dropout) draw the same ones at
    every forward call, so the function being differentiated is fixed."""
    rng = getattr(layer, "rng", None)
    if rng is None:
        return lambda: None
    state = rng.bit_generator.state
    return lambda: setattr(rng.bit_generator, "state", state)


def check_layer(layer, x, training=True, h=1e-6, seed=0):
    """Compare a layer's backward with numerical gradients, in float64.

    The layer's parameters are replaced by float64 copies and stay float64
    (check a throwaway layer, or cast back afterwards).
    Loss L = sum(forward(x) * R) for a fixed random R, so dL/dout = R.
    Returns {"x": err, "<param>": err, ...} of relative errors.
    """
    x = np.array(x, dtype=np.float64)
    for name in layer.params:
        layer.params[name] = layer.params[name].astype(np.float64)
    reset = _frozen_rng(layer)
    reset()
    out = layer.forward(x, training)
    R = np.random.default_rng(seed).standard_normal(out.shape)

    def loss():
        reset()
        return float(np.sum(layer.forward(x, training) * R))

    reset()
    layer.forward(x, training)
    dx = layer.backward(R)
    errors = {}
    if dx is not None:
        errors["x"] = relative_error(dx, numerical_gradient(loss, x, h))
    analytic = {name: g.copy() for name, g in layer.grads.items()}
    for name, p in layer.params.items():
        errors[name] = relative_error(analytic[name], numerical_gradient(loss, p, h))
    return errors


def check_net(net, loss_fn, x, y, h=1e-6, max_per_param=None, seed=0):
    """Whole-network check: every parameter of ``net`` (cast to float64).

    ``max_per_param`` limits the check to that many randomly chosen entries
    per parameter (a full check of a dense 4320x100 matrix takes minutes).
    Returns {"<layer>.<param>": relative error}.
    """
    net.astype(np.float64)
    x = np.asarray(x, dtype=np.float64)
    loss_fn.forward(net.forward(x), y)
    net.backward(loss_fn.backward())
    rng = np.random.default_rng(seed)
    errors = {}
    for i, layer in enumerate(net.layers):
        for name, p in layer.params.items():
            analytic = layer.grads[name].reshape(-1)
            flat = p.reshape(-1)
            idx = np.arange(flat.size)
            if max_per_param is not None and flat.size > max_per_param:
                idx = rng.choice(flat.size, max_per_param, replace=False)
            numeric = np.empty(len(idx))
            for k, j in enumerate(idx):
                old = flat[j]
                flat[j] = old + h
                f_plus = loss_fn.forward(net.forward(x), y)
                flat[j] = old - h
                f_minus = loss_fn.forward(net.forward(x), y)
                flat[j] = old
                numeric[k] = (f_plus - f_minus) / (2 * h)
            errors[f"{i}.{name}"] = relative_error(analytic[idx], numeric)
    return errors
