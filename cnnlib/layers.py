"""Layers with forward/backward, in the style of "Deep Learning from Scratch".

Every layer has:

* ``forward(x, training=True)`` -- computes the output and caches what the
  backward pass needs;
* ``backward(dout) -> dx`` -- takes dL/d(output), stores dL/d(parameter) in
  ``grads`` and returns dL/d(input);
* ``params`` and ``grads`` -- dicts with the same keys (``"W"``, ``"b"``,
  ``"gamma"``, ``"beta"``). Layers read their weights from ``params`` at every
  call, so replacing an entry (say, with a float64 copy for a gradient check)
  takes effect at once. Optimisers update ``params`` in place from ``grads``.

Layers keep the dtype they are given: float32 weights and float32 images stay
float32. Mixing float32 weights with float64 images is refused rather than
silently upcast (see ``Sequential.astype``).
"""
import numpy as np
from scipy.special import expit

from . import functional as Fn

__all__ = ["Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Tanh",
           "Flatten", "Dense", "Dropout", "BatchNorm2D", "BatchNorm1D", "ConvPoolBlock", "init_std"]


def init_std(init, fan_in, fan_out):
    """Standard deviation of the initial weights.

    ``"he"``: sqrt(2 / fan_in), keeps the activation variance through ReLU
    layers; ``"xavier"``: sqrt(2 / (fan_in + fan_out)) (Glorot), for tanh and
    sigmoid; ``"lecun"``: sqrt(1 / fan_in); a number: that std.
    """
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        return float(init)
    table = {"he": np.sqrt(2.0 / fan_in), "xavier": np.sqrt(2.0 / (fan_in + fan_out)),
             "lecun": np.sqrt(1.0 / fan_in)}
    if init not in table:
        raise ValueError(f"init: expected 'he', 'xavier', 'lecun' or a number, got {init!r}")
    return float(table[init])


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check_float(x, layer, expected_dtype=None):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{layer}: expected a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{layer}: expected a float array, got dtype {x.dtype} "
                        "(convert images with x.astype(np.float32) / 255)")
    if expected_dtype is not None and x.dtype != expected_dtype:
        raise TypeError(f"{layer}: input is {x.dtype} but the weights are {expected_dtype}; "
                        f"cast the input with x.astype(np.{expected_dtype}) or the "
                        f"network with net.astype(np.{x.dtype})")


class Layer:
    """Base class: no parameters, identity-free bookkeeping only."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Conv2D(Layer):
    """2-D convolution (cross-correlation) with a bias per filter.

    x: (N, C, H, W) -> out: (N, F, OH, OW), OH = (H + 2 * pad - KH) // stride + 1.
    params: W (F, C, KH, KW), b (F,).

    ``impl`` picks the algorithm: ``"fast"`` (default), ``"im2col"`` (classic)
    or ``"naive"`` (loops); all compute the same numbers. ``input_grad=False``
    skips dL/dx, for a first layer whose input is the image.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, *,
                 init="he", rng=None, dtype=np.float32, impl="fast", input_grad=True):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        if impl not in ("fast", "im2col", "naive"):
            raise ValueError(f"impl: expected 'fast', 'im2col' or 'naive', got {impl!r}")
        self.in_channels, self.stride, self.pad = in_channels, stride, pad
        self.impl, self.input_grad = impl, input_grad
        std = init_std(init, in_channels * kh * kw, out_channels * kh * kw)
        self.params["W"] = (std * _rng(rng).standard_normal((out_channels, in_channels, kh, kw))).astype(dtype)
        self.params["b"] = np.zeros(out_channels, dtype=dtype)

    def __repr__(self):
        F, C, KH, KW = self.params["W"].shape
        return f"Conv2D({C}, {F}, kernel_size={(KH, KW)}, stride={self.stride}, pad={self.pad})"

    def forward(self, x, training=True):
        Fn.check_images(x, "Conv2D input", channels=self.in_channels)
        _check_float(x, "Conv2D", self.params["W"].dtype)
        W, b = self.params["W"], self.params["b"]
        if self.impl == "fast":
            out, self.cache = Fn.conv2d_forward(x, W, b, self.stride, self.pad)
        elif self.impl == "im2col":
            out, self.cache = Fn.conv2d_im2col(x, W, b, self.stride, self.pad)
        else:
            out, self.cache = Fn.conv2d_naive(x, W, b, self.stride, self.pad), (x, W)
        return out

    def backward(self, dout):
        if self.impl == "fast":
            dx, dW, db = Fn.conv2d_backward(dout, self.cache, self.input_grad)
        elif self.impl == "im2col":
            dx, dW, db = Fn.conv2d_backward_im2col(dout, self.cache, self.input_grad)
        else:
            x, W = self.cache
            dx, dW, db = Fn.conv2d_backward_naive(dout, x, W, self.stride, self.pad)
            dx = dx if self.input_grad else None
        self.grads["W"], self.grads["b"] = dW, db
        return dx


class MaxPool2D(Layer):
    """Max-pooling over size x size windows. No parameters.

    x: (N, C, H, W) -> (N, C, OH, OW), OH = (H - size) // stride + 1;
    stride defaults to size. The gradient goes to each window's first maximum.
    """

    def __init__(self, size=2, stride=None, impl="fast"):
        super().__init__()
        if impl not in ("fast", "im2col", "naive"):
            raise ValueError(f"impl: expected 'fast', 'im2col' or 'naive', got {impl!r}")
        self.size, self.stride, self.impl = size, (size if stride is None else stride), impl

    def __repr__(self):
        return f"MaxPool2D(size={self.size}, stride={self.stride})"

    def forward(self, x, training=True):
        if self.impl == "fast":
            out, self.cache = Fn.maxpool2d_forward(x, self.size, self.stride)
        elif self.impl == "im2col":
            out, self.cache = Fn.maxpool2d_im2col(x, self.size, self.stride)
        else:
            out, self.cache = Fn.maxpool2d_naive(x, self.size, self.stride), x
        return out

    def backward(self, dout):
        if self.impl == "fast":
            return Fn.maxpool2d_backward(dout, self.cache)
        if self.impl == "im2col":
            return Fn.maxpool2d_backward_im2col(dout, self.cache)
        return Fn.maxpool2d_backward_naive(dout, self.cache, self.size, self.stride)


class AvgPool2D(Layer):
    """Average pooling over size x size windows. x: (N, C, H, W) -> (N, C, OH, OW)."""

    def __init__(self, size=2, stride=None):
        super().__init__()
        self.size, self.stride = size, (size if stride is None else stride)

    def __repr__(self):
        return f"AvgPool2D(size={self.size}, stride={self.stride})"

    def forward(self, x, training=True):
        out, self.cache = Fn.avgpool2d_forward(x, self.size, self.stride)
        return out

    def backward(self, dout):
        return Fn.avgpool2d_backward(dout, self.cache)


class ConvPoolBlock:
    """Conv2D [-> ReLU] -> MaxPool2D computed as one fused operation.

    ``cnnlib.nets.Sequential`` runs these layers through a block whenever they
    follow each other, both with ``impl="fast"``, and the pooling windows do
    not overlap (stride == size); see ``functional.conv2d_maxpool2d_forward``
    for why that is faster. The results are the same as running the layers
    one by one: the block reads the convolution's ``params`` and writes its
    ``grads``, and the layers stay in ``net.layers`` as they are.
    """

    def __init__(self, conv, relu, pool):
        self.conv, self.relu, self.pool = conv, relu, pool

    @staticmethod
    def match(layers, i):
        """Number of layers from ``layers[i]`` a block can run (3, 2, or 0 for none)."""
        if not (isinstance(layers[i], Conv2D) and layers[i].impl == "fast"):
            return 0
        n = 2 if i + 1 < len(layers) and type(layers[i + 1]) is ReLU else 1
        pool = layers[i + n] if i + n < len(layers) else None
        if isinstance(pool, MaxPool2D) and pool.impl == "fast" and pool.stride == pool.size:
            return n + 1
        return 0

    def forward(self, x, training=True):
        conv = self.conv
        Fn.check_images(x, "Conv2D input", channels=conv.in_channels)
        _check_float(x, "Conv2D", conv.params["W"].dtype)
        out, self.cache = Fn.conv2d_maxpool2d_forward(
            x, conv.params["W"], conv.params["b"], conv.stride, conv.pad, self.pool.size,
            relu=self.relu is not None)
        return out

    def backward(self, dout):
        dx, dW, db = Fn.conv2d_maxpool2d_backward(dout, self.cache, self.conv.input_grad)
        self.conv.grads["W"], self.conv.grads["b"] = dW, db
        return dx


class ReLU(Layer):
    """max(x, 0), elementwise, any shape. The gradient at exactly 0 is taken as 0."""

    def forward(self, x, training=True):
        _check_float(x, "ReLU")
        self.positive = x > 0
        return np.maximum(x, 0, dtype=x.dtype)

    def backward(self, dout):
        return dout * self.positive


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed without overflow for any x."""

    def forward(self, x, training=True):
        _check_float(x, "Sigmoid")
        self.out = expit(x)
        return self.out

    def backward(self, dout):
        return dout * self.out * (1 - self.out)


class Tanh(Layer):
    """tanh(x), elementwise."""

    def forward(self, x, training=True):
        _check_float(x, "Tanh")
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout):
        return dout * (1 - self.out ** 2)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C * H * W), in (c, h, w) order as PyTorch flattens.

    A batch-last input (see cnnlib.functional) flattens to a transposed view
    without copying, and its gradient goes back batch-last.
    """

    def forward(self, x, training=True):
        self.shape = x.shape
        moved = np.moveaxis(x, 0, -1)                      # (C, H, W, N)
        if moved.flags.c_contiguous:
            return moved.reshape(-1, len(x)).T
        return x.reshape(len(x), -1)

    def backward(self, dout):
        if dout.flags.f_contiguous:                        # batch-last, as forward made it
            return np.moveaxis(dout.T.reshape(self.shape[1:] + (len(dout),)), -1, 0)
        return dout.reshape(self.shape)


class Dense(Layer):
    """Fully connected layer: x: (N, in) @ W: (in, out) + b: (out,) -> (N, out)."""

    def __init__(self, in_features, out_features, *, init="he", rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = in_features
        std = init_std(init, in_features, out_features)
        self.params["W"] = (std * _rng(rng).standard_normal((in_features, out_features))).astype(dtype)
        self.params["b"] = np.zeros(out_features, dtype=dtype)

    def __repr__(self):
        return f"Dense({self.params['W'].shape[0]}, {self.params['W'].shape[1]})"

    def forward(self, x, training=True):
        _check_float(x, "Dense", self.params["W"].dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Dense: expected input (N, {self.in_features}), got shape {x.shape}"
                             + (" (add a Flatten layer before it)" if x.ndim > 2 else ""))
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = self.x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        if self.x.flags.f_contiguous and not self.x.flags.c_contiguous:
            # a batch-last input (from Flatten) gets its gradient batch-last too
            return (self.params["W"] @ dout.T).T
        return dout @ self.params["W"].T


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability p and
    scale the rest by 1 / (1 - p), so inference needs no rescaling."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.rng = p, _rng(rng)

    def __repr__(self):
        return f"Dropout(p={self.p})"

    def forward(self, x, training=True):
        _check_float(x, "Dropout")
        if not training or self.p == 0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        self.mask = keep * x.dtype.type(1 / (1 - self.p))
        return x * self.mask

    def backward(self, dout):
        return dout if self.mask is None else dout * self.mask


class _BatchNorm(Layer):
    """Shared code for BatchNorm1D/2D; ``axes`` are the axes averaged over.

    Training: normalise with the batch mean and (biased) variance and update
    ``running = momentum * running + (1 - momentum) * batch`` (the running
    variance uses the unbiased batch variance, as PyTorch does). Inference:
    normalise with the running statistics. Note ``momentum=0.9`` here equals
    PyTorch's ``momentum=0.1``.
    """

    axes = None

    def __init__(self, channels, eps=1e-5, momentum=0.9, dtype=np.float32):
        super().__init__()
        self.channels, self.eps, self.momentum = channels, eps, momentum
        self.params["gamma"] = np.ones(channels, dtype=dtype)
        self.params["beta"] = np.zeros(channels, dtype=dtype)
        self.buffers = {"running_mean": np.zeros(channels, dtype=dtype),
                        "running_var": np.ones(channels, dtype=dtype)}

    def __repr__(self):
        return f"{type(self).__name__}({self.channels})"

    def _shape(self, v):
        return v.reshape((1, -1) + (1,) * (len(self.axes) - 1))

    def forward(self, x, training=True):
        _check_float(x, type(self).__name__, self.params["gamma"].dtype)
        expected_ndim = len(self.axes) + 1
        if x.ndim != expected_ndim or x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__}: expected {expected_ndim}-D input with "
                             f"{self.channels} channels on axis 1, got shape {x.shape}")
        if training:
            mean, var = x.mean(axis=self.axes), x.var(axis=self.axes)
            m = x.size // self.channels
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= self.momentum
            rm += (1 - self.momentum) * mean
            rv *= self.momentum
            rv += (1 - self.momentum) * var * (m / max(m - 1, 1))
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.inv_std = 1 / np.sqrt(var + self.eps)
        self.xhat = (x - self._shape(mean)) * self._shape(self.inv_std)
        self.training = training
        return self._shape(self.params["gamma"]) * self.xhat + self._shape(self.params["beta"])

    def backward(self, dout):
        self.grads["gamma"] = (dout * self.xhat).sum(axis=self.axes)
        self.grads["beta"] = dout.sum(axis=self.axes)
        dxhat = dout * self._shape(self.params["gamma"])
        if not self.training:                      # running stats are constants
            return dxhat * self._shape(self.inv_std)
        # d/dx of (x - mean) / std, with mean and std depending on x too:
        m = dout.size // self.channels
        return (self._shape(self.inv_std) / m) * (
            m * dxhat - self._shape(dxhat.sum(axis=self.axes))
            - self.xhat * self._shape((dxhat * self.xhat).sum(axis=self.axes)))


class BatchNorm2D(_BatchNorm):
    """Batch normalisation per channel. x: (N, C, H, W); gamma, beta: (C,)."""
    axes = (0, 2, 3)


class BatchNorm1D(_BatchNorm):
    """Batch normalisation per feature. x: (N, D); gamma, beta: (D,)."""
    axes = (0,)
