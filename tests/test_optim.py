"""Optimisers against their update formulas written out independently."""
import numpy as np
import pytest

from cnnlib import layers as L
from cnnlib import optim


def one_param_layer(value, grad):
    layer = L.Layer()
    layer.params["W"] = np.array(value, dtype=np.float64)
    layer.grads["W"] = np.array(grad, dtype=np.float64)
    return layer


def test_sgd():
    layer = one_param_layer([1.0, -2.0], [0.5, 0.25])
    optim.SGD([layer], lr=0.1).step()
    np.testing.assert_allclose(layer.params["W"], [0.95, -2.025])


def test_momentum_two_steps():
    layer = one_param_layer([1.0], [1.0])
    opt = optim.Momentum([layer], lr=0.1, momentum=0.9)
    opt.step()                      # v = -0.1, w = 0.9
    opt.step()                      # v = 0.9 * -0.1 - 0.1 = -0.19, w = 0.71
    np.testing.assert_allclose(layer.params["W"], [0.71])


def test_adam_first_step_moves_by_lr_and_matches_formula():
    layer = one_param_layer([1.0, 1.0], [0.003, -40.0])
    opt = optim.Adam([layer], lr=0.01)
    opt.step()                      # bias-corrected first step is lr * sign(g)
    np.testing.assert_allclose(layer.params["W"], [0.99, 1.01], rtol=1e-6)
    layer.grads["W"] = np.array([1.0, 2.0])
    opt.step()
    g1, g2 = np.array([0.003, -40.0]), np.array([1.0, 2.0])
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1**2 + 0.001 * g2**2
    step = 0.01 * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + 1e-8)
    w1 = 1.0 - 0.01 * g1 / (np.abs(g1) + 1e-8)
    np.testing.assert_allclose(layer.params["W"], w1 - step, rtol=1e-10)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Momentum, optim.Adam])
def test_updates_are_in_place_and_keep_float32(cls):
    layer = L.Dense(4, 3, rng=0)
    w = layer.params["W"]
    layer.forward(np.ones((2, 4), np.float32))
    layer.backward(np.ones((2, 3), np.float32))
    before = w.copy()
    cls([layer], lr=0.1).step()
    assert layer.params["W"] is w and w.dtype == np.float32
    assert not np.array_equal(w, before)


@pytest.mark.parametrize("cls,lr", [(optim.SGD, 0.1), (optim.Momentum, 0.05), (optim.Adam, 0.1)])
def test_minimises_a_quadratic(cls, lr):
    layer = one_param_layer([3.0, -2.0], [0.0, 0.0])
    opt = cls([layer], lr=lr)
    for _ in range(300):
        layer.grads["W"] = 2 * layer.params["W"]          # gradient of ||w||^2
        opt.step()
    assert np.linalg.norm(layer.params["W"]) < 1e-2
