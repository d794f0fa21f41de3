"""Bad input gets a clear error naming what was expected and what came."""
import numpy as np
import pytest

from cnnlib import fast, io, losses, nets, optim, parallel, train
from cnnlib import functional as F
from cnnlib import layers as L

f32 = np.float32
img = np.zeros((2, 1, 28, 28), f32)


def case(id, fn, exc, *words):
    return pytest.param(fn, exc, words, id=id)


CASES = [
    case("conv: 3-D input", lambda: L.Conv2D(1, 4, 3).forward(np.zeros((1, 28, 28), f32)),
         ValueError, "(N, C, H, W)", "(1, 28, 28)"),
    case("conv: wrong channel count", lambda: L.Conv2D(3, 4, 3).forward(img),
         ValueError, "3 channels", "(2, 1, 28, 28)"),
    case("conv: kernel larger than padded input", lambda: L.Conv2D(1, 4, 7, pad=1).forward(np.zeros((1, 1, 4, 4), f32)),
         ValueError, "kernel size 7", "padded input 6"),
    case("conv: uint8 images", lambda: L.Conv2D(1, 4, 3).forward(np.zeros((1, 1, 8, 8), np.uint8)),
         TypeError, "float", "uint8"),
    case("conv: float64 input, float32 weights", lambda: L.Conv2D(1, 4, 3).forward(np.zeros((1, 1, 8, 8))),
         TypeError, "float64", "float32"),
    case("conv: list instead of array", lambda: L.Conv2D(1, 4, 3).forward([[1.0]]),
         TypeError, "NumPy array", "list"),
    case("conv: unknown impl", lambda: L.Conv2D(1, 4, 3, impl="gpu"), ValueError, "'fast'", "'gpu'"),
    case("conv: zero kernel size", lambda: L.Conv2D(3, 4, 0), ValueError, "kernel_size must be a positive integer", "0"),
    case("conv: float kernel size", lambda: L.Conv2D(3, 4, 2.5), ValueError, "positive integer", "2.5"),
    case("conv: kernel pair of three", lambda: L.Conv2D(3, 4, (3, 3, 3)), ValueError, "pair (height, width)", "(3, 3, 3)"),
    case("conv: zero stride", lambda: L.Conv2D(3, 4, 3, stride=0), ValueError, "stride must be a positive integer", "0"),
    case("conv: negative padding", lambda: L.Conv2D(3, 4, 3, pad=-1), ValueError, "pad must be an integer >= 0", "-1"),
    case("conv: zero output channels", lambda: L.Conv2D(3, 0, 3), ValueError, "out_channels must be a positive integer", "0"),
    case("conv: channels as a string", lambda: L.Conv2D("3", 4, 3), ValueError, "in_channels must be a positive integer", "'3'"),
    case("conv: boolean channels", lambda: L.Conv2D(True, 4, 3), ValueError, "in_channels must be a positive integer", "True"),
    case("pool: zero size", lambda: L.MaxPool2D(0), ValueError, "size must be a positive integer", "0"),
    case("pool: negative stride", lambda: L.AvgPool2D(2, stride=-2), ValueError, "stride must be a positive integer", "-2"),
    case("pool: unknown impl", lambda: L.MaxPool2D(2, impl="loops"), ValueError, "'im2col'", "'loops'"),
    case("dense: zero inputs", lambda: L.Dense(0, 10), ValueError, "in_features must be a positive integer", "0"),
    case("dense: float outputs", lambda: L.Dense(10, 2.0), ValueError, "out_features must be a positive integer", "2.0"),
    case("batchnorm: negative channels", lambda: L.BatchNorm2D(-8), ValueError, "channels must be a positive integer", "-8"),
    case("batchnorm: negative eps", lambda: L.BatchNorm1D(4, eps=-1e-5), ValueError, "eps must be a number >= 0", "-1e-05"),
    case("batchnorm: momentum above 1", lambda: L.BatchNorm2D(4, momentum=1.5), ValueError, "[0, 1]", "1.5"),
    case("dropout: p as a string", lambda: L.Dropout("0.5"), ValueError, "[0, 1)", "'0.5'"),
    case("backward before forward", lambda: L.Dense(3, 2).backward(np.ones((1, 2), f32)),
         RuntimeError, "forward(x, training=True)", "no cache"),
    case("backward after inference", lambda: (lambda r: (r.forward(np.ones((1, 3), f32), training=False),
                                                         r.backward(np.ones((1, 3), f32))))(L.ReLU()),
         RuntimeError, "forward(x, training=True)", "inference keeps none"),
    case("fuse: overlapping pool", lambda: fast.fuse(L.Conv2D(1, 2, 3), L.ReLU(), L.MaxPool2D(3, stride=2)),
         ValueError, "stride == size", "MaxPool2D(size=3, stride=2"),
    case("fuse: not a conv", lambda: fast.fuse(L.Dense(3, 2), L.ReLU(), L.MaxPool2D(2)),
         TypeError, "(Conv2D, ReLU or None, MaxPool2D)", "'Dense'"),
    case("parallel: zero threads", lambda: parallel.ParallelStep(0), ValueError, "positive integer", "0"),
    case("parallel: layer that cannot be split", lambda: parallel.ParallelStep(2)(
        nets.Sequential([L.Flatten(), L.Dense(784, 8), type("Odd", (L.Layer,), {"per_sample": False})()]),
        losses.SoftmaxCrossEntropy(), optim.SGD(nets.SimpleConvNet(), 0.1), img, np.array([1, 2])),
         ValueError, "Odd()", "train_step"),
    case("fit: NaN in the images", lambda: train.fit(
        nets.SimpleConvNet(), losses.SoftmaxCrossEntropy(), optim.SGD(nets.SimpleConvNet(), 0.1),
        np.full((2, 1, 28, 28), np.nan, f32), np.array([1, 2]), progress=False),
         ValueError, "finite numbers", "1568 NaN or inf"),
    case("fit: validation lengths differ", lambda: train.fit(
        nets.SimpleConvNet(), losses.SoftmaxCrossEntropy(), optim.SGD(nets.SimpleConvNet(), 0.1),
        img, np.array([1, 2]), validation=(img, np.array([1])), progress=False), ValueError, "2 samples", "1"),
    case("functional conv: filter channels differ", lambda: F.conv2d_forward_im2col(
        np.zeros((1, 2, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(3)), ValueError, "1 input channels", "2"),
    case("fast conv: bias shape", lambda: fast.conv2d_forward_fast(
        np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), np.zeros(4)), ValueError, "(3,)", "(4,)"),
    case("pool: window larger than input", lambda: L.MaxPool2D(4).forward(np.zeros((1, 1, 3, 3), f32)),
         ValueError, "kernel size 4", "3"),
    case("pool: int images", lambda: L.MaxPool2D(2).forward(np.zeros((1, 1, 4, 4), int)),
         TypeError, "float", "int64"),
    case("dense: unflattened input", lambda: L.Dense(784, 10).forward(img),
         ValueError, "(N, 784)", "Flatten"),
    case("dense: wrong feature count", lambda: L.Dense(784, 10).forward(np.zeros((2, 100), f32)),
         ValueError, "(N, 784)", "(2, 100)"),
    case("relu: integer input", lambda: L.ReLU().forward(np.arange(3)), TypeError, "float", "int64"),
    case("dropout: p out of range", lambda: L.Dropout(1.0), ValueError, "[0, 1)", "1.0"),
    case("batchnorm: wrong channels", lambda: L.BatchNorm2D(8).forward(np.zeros((2, 4, 3, 3), f32)),
         ValueError, "8 channels", "(2, 4, 3, 3)"),
    case("init: unknown scheme", lambda: L.Dense(3, 3, init="glorotish"), ValueError, "'he'", "glorotish"),
    case("softmax CE: label out of range", lambda: losses.SoftmaxCrossEntropy().forward(
        np.zeros((2, 10)), np.array([3, 10])), ValueError, "[0, 9]", "10"),
    case("softmax CE: negative label", lambda: losses.SoftmaxCrossEntropy().forward(
        np.zeros((2, 10)), np.array([-1, 0])), ValueError, "[0, 9]", "-1"),
    case("softmax CE: batch sizes differ", lambda: losses.SoftmaxCrossEntropy().forward(
        np.zeros((3, 10)), np.array([1, 2])), ValueError, "(3,)", "(2,)"),
    case("softmax CE: float labels", lambda: losses.SoftmaxCrossEntropy().forward(
        np.zeros((2, 10)), np.array([1.0, 2.0])), TypeError, "integer", "float64"),
    case("softmax CE: 1-D logits", lambda: losses.SoftmaxCrossEntropy().forward(
        np.zeros(10), np.array([1])), ValueError, "(N, K)", "(10,)"),
    case("binary CE: label 2", lambda: losses.BinaryCrossEntropy().forward(
        np.zeros(3), np.array([0, 1, 2])), ValueError, "[0, 1]", "2"),
    case("binary CE: two logits per sample", lambda: losses.BinaryCrossEntropy().forward(
        np.zeros((3, 2)), np.array([0, 1, 1])), ValueError, "(N,) or (N, 1)", "(3, 2)"),
    case("fit: X and y lengths differ", lambda: train.fit(
        nets.SimpleConvNet(), losses.SoftmaxCrossEntropy(), optim.SGD(nets.SimpleConvNet(), 0.1),
        img, np.array([1, 2, 3]), progress=False), ValueError, "2 samples", "3"),
    case("optimiser: step before backward", lambda: optim.SGD(nets.SimpleConvNet(), 0.1).step(),
         RuntimeError, "no gradient", "backward"),
    case("optimiser: negative learning rate", lambda: optim.Adam(nets.SimpleConvNet(), -1),
         ValueError, "positive", "-1"),
    case("output size: zero stride", lambda: F.conv_output_size(28, 3, 0), ValueError, ">= 1", "0"),
]


@pytest.mark.parametrize("fn,exc,words", CASES)
def test_bad_input_is_named(fn, exc, words):
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from: {message}"


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


def test_load_refuses_other_architecture(tmp_path):
    path = tmp_path / "w.npz"
    io.save(nets.SimpleConvNet(hidden=100), path)
    with pytest.raises(ValueError, match=r"4\.W has shape \(4320, 100\) in the file but \(4320, 50\)"):
        io.load(nets.SimpleConvNet(hidden=50), path)
