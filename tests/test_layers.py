"""Every layer and loss gradient-checked in float64, plus behaviour checks."""
import warnings

import numpy as np
import pytest

from cnnlib import gradcheck, losses, nets
from cnnlib import layers as L
from cnnlib.gradcheck import numerical_gradient, relative_error

rng = np.random.default_rng(0)


def make(kind):
    r = np.random.default_rng(1)
    return {
        "conv_fast": (L.Conv2D(2, 3, 3, stride=1, pad=1, rng=r, impl="fast"), (2, 2, 5, 5)),
        "conv_stride_pad": (L.Conv2D(2, 3, (3, 2), stride=2, pad=2, rng=r, impl="fast"), (2, 2, 6, 5)),
        "conv_im2col": (L.Conv2D(2, 3, 3, stride=2, pad=1, rng=r), (2, 2, 6, 6)),
        "conv_naive": (L.Conv2D(1, 2, 2, rng=r, impl="naive"), (2, 1, 4, 4)),
        "maxpool": (L.MaxPool2D(2, impl="fast"), (2, 3, 6, 6)),
        "maxpool_overlap": (L.MaxPool2D(3, stride=2, impl="fast"), (2, 2, 7, 7)),
        "maxpool_im2col": (L.MaxPool2D(2), (2, 2, 5, 5)),
        "maxpool_naive": (L.MaxPool2D(2, impl="naive"), (1, 2, 4, 4)),
        "avgpool_naive": (L.AvgPool2D(3, stride=2, impl="naive"), (2, 1, 7, 6)),
        "avgpool": (L.AvgPool2D(2), (2, 2, 5, 4)),
        "relu": (L.ReLU(), (3, 7)),
        "sigmoid": (L.Sigmoid(), (3, 7)),
        "tanh": (L.Tanh(), (3, 7)),
        "flatten": (L.Flatten(), (2, 3, 2, 2)),
        "dense": (L.Dense(6, 4, rng=r), (5, 6)),
        "dropout": (L.Dropout(0.4, rng=r), (4, 5)),
        "batchnorm2d": (L.BatchNorm2D(3), (4, 3, 3, 3)),
        "batchnorm1d": (L.BatchNorm1D(5), (6, 5)),
    }[kind]


LAYER_KINDS = ["conv_fast", "conv_stride_pad", "conv_im2col", "conv_naive", "maxpool",
               "maxpool_overlap", "maxpool_im2col", "maxpool_naive", "avgpool", "avgpool_naive", "relu", "sigmoid", "tanh",
               "flatten", "dense", "dropout", "batchnorm2d", "batchnorm1d"]


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_gradients(kind, record_gradcheck):
    layer, shape = make(kind)
    if isinstance(layer, L._BatchNorm):          # non-trivial gamma/beta
        layer.params["gamma"] = rng.standard_normal(layer.channels)
        layer.params["beta"] = rng.standard_normal(layer.channels)
    x = np.random.default_rng(2).standard_normal(shape)
    errors = gradcheck.check_layer(layer, x)
    assert set(errors) == {"x", *layer.params}
    record_gradcheck(errors)


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_inference_keeps_no_cache(kind):
    """forward(training=False) keeps nothing for backward (memory stays bounded
    when predicting), and a backward after it says what to do."""
    layer, shape = make(kind)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    layer.forward(x, training=True)
    assert layer.cache is not None
    out = layer.forward(x, training=False)
    assert layer.cache is None
    with pytest.raises(RuntimeError, match=r"forward\(x, training=True\)"):
        layer.backward(np.ones_like(out))


def test_first_conv_layer_skips_input_gradient():
    conv = L.Conv2D(1, 2, 3, input_grad=False)
    out = conv.forward(rng.standard_normal((2, 1, 5, 5)).astype(np.float32))
    assert conv.backward(np.ones_like(out)) is None
    assert conv.grads["W"].shape == (2, 1, 3, 3)


@pytest.mark.parametrize("loss_cls,logit_shape,labels", [
    (losses.SoftmaxCrossEntropy, (5, 4), np.array([0, 3, 1, 1, 2])),
    (losses.BinaryCrossEntropy, (5,), np.array([0, 1, 1, 0, 1])),
    (losses.BinaryCrossEntropy, (5, 1), np.array([0, 1, 1, 0, 1])),
])
def test_loss_gradients(loss_cls, logit_shape, labels, record_gradcheck):
    loss = loss_cls()
    z = rng.standard_normal(logit_shape) * 3
    loss.forward(z, labels)
    analytic = loss.backward()
    numeric = numerical_gradient(lambda: loss.forward(z, labels), z)
    record_gradcheck({"logits": relative_error(analytic, numeric)})


def test_whole_simple_conv_net_gradient(record_gradcheck):
    net = nets.SimpleConvNet(input_shape=(1, 10, 10), filters=3, kernel_size=3, hidden=6,
                             n_classes=4, seed=3)
    x = np.random.default_rng(4).standard_normal((3, 1, 10, 10))
    y = np.array([0, 3, 2])
    errors = gradcheck.check_net(net, losses.SoftmaxCrossEntropy(), x, y, max_per_param=40)
    assert len(errors) == 6
    record_gradcheck(errors)


def test_softmax_cross_entropy_known_values():
    # uniform logits: loss is ln K whatever the label
    loss = losses.SoftmaxCrossEntropy()
    assert loss.forward(np.zeros((3, 10)), np.array([0, 5, 9])) == pytest.approx(np.log(10))
    # hand-computed: logits (1, 2, 3), label 2 -> -log(e^3 / (e + e^2 + e^3))
    expected = -np.log(np.exp(3) / (np.exp(1) + np.exp(2) + np.exp(3)))
    assert loss.forward(np.array([[1.0, 2.0, 3.0]]), np.array([2])) == pytest.approx(expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_are_stable_on_huge_logits(dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ce = losses.SoftmaxCrossEntropy()
        right, wrong = ce.forward(z, np.array([0, 2])), ce.forward(z, np.array([1, 0]))
        assert right == pytest.approx(0.0, abs=1e-6) and wrong == pytest.approx(2000.0, rel=1e-6)
        assert np.all(np.isfinite(ce.backward()))
        bce = losses.BinaryCrossEntropy()
        zb = np.array([1000.0, -1000.0, 1000.0, -1000.0], dtype=dtype)
        assert bce.forward(zb, np.array([1, 0, 1, 0])) == pytest.approx(0.0, abs=1e-6)
        assert bce.forward(zb, np.array([0, 1, 0, 1])) == pytest.approx(1000.0, rel=1e-6)
        assert np.all(np.isfinite(bce.backward()))
        s = L.Sigmoid().forward(zb)
        np.testing.assert_array_equal(s, [1, 0, 1, 0])
        assert np.all(np.isfinite(losses.softmax(z)))


@pytest.mark.parametrize("layer_fn", [
    lambda: L.Conv2D(3, 4, 3, pad=1, impl="fast"), lambda: L.MaxPool2D(2, impl="fast"),
    lambda: L.AvgPool2D(2), lambda: L.ReLU(),
    lambda: L.Sigmoid(), lambda: L.BatchNorm2D(3), lambda: L.Dropout(0.5, rng=0),
    lambda: L.Conv2D(3, 4, 3), lambda: L.MaxPool2D(2)])
def test_layers_keep_float32(layer_fn):
    layer = layer_fn()
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    out = layer.forward(x)
    assert out.dtype == np.float32
    dx = layer.backward(np.ones_like(out))
    assert dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_simple_conv_net_float32_end_to_end():
    net = nets.SimpleConvNet()
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    loss = losses.SoftmaxCrossEntropy()
    logits = net.forward(x)
    assert logits.shape == (4, 10) and logits.dtype == np.float32
    loss.forward(logits, np.array([1, 2, 3, 4]))
    net.backward(loss.backward())
    for layer in net.layers:
        for k, g in layer.grads.items():
            assert g.dtype == np.float32 and g.shape == layer.params[k].shape
    assert net.num_params() == 30 * 25 + 30 + 4320 * 100 + 100 + 100 * 10 + 10


def test_he_initialisation_scale():
    conv = L.Conv2D(16, 64, 3, rng=0)
    assert conv.params["W"].std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.05)
    dense = L.Dense(500, 300, init="xavier", rng=0)
    assert dense.params["W"].std() == pytest.approx(np.sqrt(2 / 800), rel=0.05)
    assert L.Dense(10, 10, init=0.01, rng=0).params["W"].std() == pytest.approx(0.01, rel=0.3)


def test_dropout_train_and_inference():
    d = L.Dropout(0.25, rng=0)
    x = np.ones((200, 500))
    out = d.forward(x, training=True)
    assert np.mean(out == 0) == pytest.approx(0.25, abs=0.01)
    assert set(np.unique(out)) == {0.0, 1 / 0.75}
    assert out.mean() == pytest.approx(1.0, abs=0.01)      # expectation preserved
    np.testing.assert_array_equal(d.forward(x, training=False), x)


def test_batchnorm_train_normalises_and_inference_uses_running_stats():
    bn = L.BatchNorm2D(2, momentum=0.5, dtype=np.float64)
    x = rng.standard_normal((50, 2, 4, 4)) * np.array([3.0, 0.5])[None, :, None, None] + 7
    out = bn.forward(x, training=True)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-3)
    # one update with momentum 0.5 from (0, 1): halfway to the batch statistics
    m = x.size // 2
    np.testing.assert_allclose(bn.buffers["running_mean"], 0.5 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(bn.buffers["running_var"], 0.5 + 0.5 * x.var(axis=(0, 2, 3)) * m / (m - 1))
    before = {k: v.copy() for k, v in bn.buffers.items()}
    inf = bn.forward(x, training=False)
    expected = (x - before["running_mean"][None, :, None, None]) / np.sqrt(
        before["running_var"][None, :, None, None] + 1e-5)
    np.testing.assert_allclose(inf, expected)
    for k in before:                                            # inference changes nothing
        np.testing.assert_array_equal(bn.buffers[k], before[k])


def test_params_entries_can_be_replaced():
    dense = L.Dense(3, 2, rng=0)
    dense.params["W"] = np.ones((3, 2))
    dense.params["b"] = np.zeros(2)
    np.testing.assert_array_equal(dense.forward(np.ones((1, 3))), [[3.0, 3.0]])


def test_layer_impls_agree_inside_a_network():
    x = rng.random((3, 1, 12, 12), dtype=np.float32)
    y = np.array([1, 0, 7])
    results = []
    for fast, impl in ((True, "im2col"), (False, "fast"), (False, "im2col"), (False, "naive")):
        net = nets.SimpleConvNet((1, 12, 12), filters=4, hidden=8, fast=fast, impl=impl, seed=5)
        loss = losses.SoftmaxCrossEntropy()
        out = net.forward(x)
        loss.forward(out, y)
        net.backward(loss.backward())
        results.append((out, [layer.grads[k].copy() for layer in net.textbook_layers()
                              for k in layer.params]))
    for out, grads in results[1:]:
        np.testing.assert_allclose(out, results[0][0], rtol=1e-5, atol=1e-6)
        assert len(grads) == len(results[0][1]) == 6
        for g, g0 in zip(grads, results[0][1]):
            np.testing.assert_allclose(g, g0, rtol=1e-4, atol=1e-6)


def test_flatten_of_a_batch_last_view_is_free_and_exact():
    """The fast tier returns batch-last views; the textbook Flatten's reshape
    of one is a view (no copy), and the values are what they should be."""
    r = np.random.default_rng(3)
    x = r.standard_normal((4, 3, 2, 5))
    x_last = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    layer = L.Flatten()
    out = layer.forward(x_last)
    assert np.shares_memory(out, x_last)
    np.testing.assert_array_equal(out, x.reshape(4, -1))
    np.testing.assert_array_equal(layer.backward(out), x)
