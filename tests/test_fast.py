"""The fast path is explicit and computes what the textbook layers compute.

* the fused layer equals Conv2D [-> ReLU] -> MaxPool2D layer by layer
  (values, every gradient, the input gradient), including ties;
* its gradients pass float64 numerical checks on random shapes;
* Sequential runs exactly its layers, each once, so backpropagating layer by
  layer after any stray forward call gives the true gradients;
* a network and its fast twin share weights files.
"""
import subprocess
import sys

import numpy as np
import pytest

from cnnlib import fast, gradcheck, io, losses, nets
from cnnlib import layers as L
from cnnlib.gradcheck import numerical_gradient, relative_error


def textbook_and_fused(relu, pool, c=2, f=4, k=3, pad=1, size=7, impl="im2col", seed=7):
    r = np.random.default_rng(seed)
    middle = [L.ReLU()] if relu else []
    n_features = f * ((size + 2 * pad - k + 1) // pool) ** 2
    layers = [L.Conv2D(c, f, k, pad=pad, rng=r, dtype=np.float64, impl=impl), *middle,
              L.MaxPool2D(pool, impl=impl), L.Flatten(), L.Dense(n_features, 3, rng=r, dtype=np.float64)]
    plain = nets.Sequential(layers)
    return plain, nets.Sequential(fast.fuse_layers(plain.layers))   # shares the weights


@pytest.fixture(params=["window patches", "im2col matrix"])
def fused_cache(request, monkeypatch):
    """Both things the fused layer can keep for its weight gradient: the window
    patches (thin im2col matrices, below fast._THIN rows) and the im2col matrix."""
    monkeypatch.setattr(fast, "_THIN", 10**9 if request.param == "window patches" else 0)
    return request.param


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("relu,pool", [(True, 2), (False, 2), (True, 3)])
def test_fused_layer_equals_the_layers_one_by_one(relu, pool, ties, fused_cache):
    plain, fused = textbook_and_fused(relu, pool)
    assert isinstance(fused.layers[0], fast.FusedConvPool) and len(fused.layers) == 3
    assert fused.layers[0].params is plain.layers[0].params          # the same weights
    rng_x = np.random.default_rng(8)
    x = rng_x.integers(-1, 2, (5, 2, 7, 7)).astype(float) if ties else rng_x.standard_normal((5, 2, 7, 7))
    if ties:
        plain.layers[0].params["W"] = np.round(plain.layers[0].params["W"])
    # inference keeps no masks and writes the max where training would: the same values
    np.testing.assert_allclose(fused.forward(x, training=False), plain.forward(x, training=False),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fused.forward(x), plain.forward(x), rtol=1e-12, atol=1e-12)
    dout = rng_x.standard_normal((5, 3))
    np.testing.assert_allclose(fused.backward(dout), plain.backward(dout), rtol=1e-12, atol=1e-12)
    fused_grads = {key: fused_layer.grads[name].copy()
                   for key, fused_layer, name in _grads(fused)}
    plain.forward(x)
    plain.backward(dout)
    for key, layer, name in _grads(plain):
        np.testing.assert_allclose(fused_grads[key], layer.grads[name], rtol=1e-12, atol=1e-12)


def _grads(net):
    for i, layer in enumerate(net.textbook_layers()):
        for name in layer.params:
            yield f"{i}.{name}", layer, name


def fused_cases(n, seed=0):
    """Random shapes, strides, paddings and pool sizes (the conv output holds
    at least one pooling window), with and without ReLU."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        c, f, k, stride, pad, size = (int(v) for v in (rng.integers(1, 4), rng.integers(1, 4),
                                      rng.integers(1, 5), rng.integers(1, 3), rng.integers(0, 3),
                                      rng.integers(1, 4)))
        low = max(1, k + (size - 1) * stride - 2 * pad)
        h, w = int(rng.integers(low, 10)), int(rng.integers(low, 10))
        yield pytest.param(c, f, k, stride, pad, size, h, w, bool(rng.integers(2)),
                           id=f"c{c}f{f}k{k}s{stride}p{pad}pool{size}h{h}w{w}")


@pytest.mark.parametrize("c,f,k,stride,pad,size,h,w,relu", list(fused_cases(20)))
def test_fused_layer_gradients_check_numerically(c, f, k, stride, pad, size, h, w, relu,
                                                 record_gradcheck, fused_cache):
    rng = np.random.default_rng(c * 100 + h)
    conv = L.Conv2D(c, f, k, stride=stride, pad=pad, rng=rng, dtype=np.float64)
    conv.params["b"] = rng.standard_normal(f)          # keep conv outputs off ReLU's kink
    layer = fast.fuse(conv, L.ReLU() if relu else None, L.MaxPool2D(size))
    errors = gradcheck.check_layer(layer, rng.standard_normal((2, c, h, w)))
    assert set(errors) == {"x", "W", "b"}
    kept = layer.cache[1].shape[0]              # rows of the matrix kept for the weight gradient
    assert (kept == c * k * k) == (fused_cache == "im2col matrix") or size == 1
    record_gradcheck(errors)


def test_fuse_says_what_it_fuses_and_refuses_what_it_cannot():
    conv = L.Conv2D(1, 30, 5)
    layer = fast.fuse(conv, L.ReLU(), L.MaxPool2D(2))
    assert repr(layer) == "FusedConvPool(Conv2D(1, 30, kernel_size=(5, 5), stride=1, pad=0) -> ReLU -> MaxPool2D(size=2))"
    assert repr(fast.fuse(conv, None, L.MaxPool2D(2))).count("ReLU") == 0
    with pytest.raises(ValueError, match="must not overlap"):
        fast.fuse(conv, L.ReLU(), L.MaxPool2D(3, stride=2))
    with pytest.raises(TypeError, match=r"expected \(Conv2D, ReLU or None, MaxPool2D\), got \('Conv2D', 'Sigmoid'"):
        fast.fuse(conv, L.Sigmoid(), L.MaxPool2D(2))
    overlapping = [L.Conv2D(1, 2, 3), L.ReLU(), L.MaxPool2D(3, stride=2)]
    assert fast.fuse_layers(overlapping) == overlapping          # left as it is


def test_simple_conv_net_shows_what_runs():
    fast_net, plain_net = nets.SimpleConvNet(), nets.SimpleConvNet(fast=False)
    assert [type(layer).__name__ for layer in fast_net.layers] == \
        ["FusedConvPool", "Flatten", "Dense", "ReLU", "Dense"]
    assert [type(layer).__name__ for layer in plain_net.layers] == \
        ["Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "ReLU", "Dense"]
    assert "FusedConvPool(Conv2D(1, 30" in repr(fast_net)
    # the same seed gives the same weights, under the same keys
    a = {key: store[name] for key, store, name in fast_net.named_arrays()}
    b = {key: store[name] for key, store, name in plain_net.named_arrays()}
    assert a.keys() == b.keys() == {"0.W", "0.b", "4.W", "4.b", "6.W", "6.b"}
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_weights_move_between_a_net_and_its_fast_twin(tmp_path):
    trained = nets.SimpleConvNet((1, 10, 10), filters=3, kernel_size=3, hidden=6, seed=1)
    path = tmp_path / "w.npz"
    io.save(trained, path)
    plain = io.load(nets.SimpleConvNet((1, 10, 10), filters=3, kernel_size=3, hidden=6, seed=2,
                                       fast=False), path)
    x = np.random.default_rng(0).random((4, 1, 10, 10), dtype=np.float32)
    np.testing.assert_allclose(plain.forward(x), trained.forward(x), rtol=1e-5, atol=1e-6)


class Counting(L.Layer):
    """A layer that counts its calls and passes values through."""

    def __init__(self, log, name):
        super().__init__()
        self.log, self.name = log, name

    def forward(self, x, training=True):
        self.log.append(("forward", self.name))
        self.cache = True
        return x

    def backward(self, dout):
        self.log.append(("backward", self.name))
        return dout


def test_sequential_runs_exactly_its_layers_each_once():
    log = []
    net = nets.Sequential([L.Conv2D(1, 2, 3, rng=0), Counting(log, "a"), L.ReLU(), Counting(log, "b"),
                           L.MaxPool2D(2), Counting(log, "c")])
    out = net.forward(np.ones((1, 1, 6, 6), np.float32))
    net.backward(np.ones_like(out))
    assert log == [("forward", "a"), ("forward", "b"), ("forward", "c"),
                   ("backward", "c"), ("backward", "b"), ("backward", "a")]


@pytest.mark.parametrize("fast_net", [False, True], ids=["textbook", "fast"])
def test_layer_by_layer_backward_after_a_stray_forward_gives_true_gradients(fast_net):
    """The scenario of the 'one path' issue: net.forward, then backprop layer
    by layer as notebook 07 teaches, after a stray layer-by-layer forward on
    other images. Every gradient must be the true one (numerical, float64)."""
    net = nets.SimpleConvNet((1, 8, 8), filters=3, kernel_size=3, hidden=5, n_classes=4, seed=3,
                             dtype=np.float64, fast=fast_net)
    rng = np.random.default_rng(4)
    for layer in net.layers:                                    # biases off ReLU's kink
        if "b" in layer.params:
            layer.params["b"] = rng.standard_normal(layer.params["b"].shape) * 0.1
    x, y = rng.standard_normal((3, 1, 8, 8)), np.array([0, 3, 2])
    stray = rng.standard_normal((5, 1, 8, 8))
    for layer in net.layers:                                    # a stray forward, layer by layer
        stray = layer.forward(stray)
    loss_fn = losses.SoftmaxCrossEntropy()
    loss_fn.forward(net.forward(x), y)
    d = loss_fn.backward()
    for layer in reversed(net.layers):                          # backprop, layer by layer
        d = layer.backward(d)
    for key, layer, name in _grads(net):
        numeric = numerical_gradient(lambda: loss_fn.forward(net.forward(x), y), layer.params[name])
        assert relative_error(layer.grads[name], numeric) < 1e-7, key


FAULTS_PER_STEP = """
import resource, sys
import numpy as np
from cnnlib import fast, layers
if sys.argv[1] == "keep" and not fast.keep_freed_memory():
    print("no glibc")
    raise SystemExit
conv = layers.Conv2D(32, 32, 3, pad=1, rng=0, impl="fast")     # notebook 08's middle layer
x = np.random.default_rng(0).standard_normal((100, 32, 14, 14)).astype(np.float32)
def step():
    conv.backward(conv.forward(x))
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator, Linux only")
def test_keep_freed_memory_stops_the_page_faults_of_repeated_steps():
    """With glibc's defaults every step of a 32-channel convolution faults in
    fresh pages for its big arrays (the premise); after keep_freed_memory()
    the steps reuse the pages of the last one. Each run is a fresh process:
    the setting is process-wide and lasting."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, mode], capture_output=True,
                             text=True, check=True).stdout.strip()
        if out == "no glibc":
            pytest.skip("this C library has no mallopt")
        return int(out)
    default, kept = faults("default"), faults("keep")
    assert default > 1000, f"{default} page faults per step with the allocator's defaults"
    assert kept < default / 20, f"{kept} page faults per step after keep_freed_memory(), {default} before"
