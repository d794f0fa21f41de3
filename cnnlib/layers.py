"""Layers with forward/backward, in the style of "Deep Learning from Scratch".

Every layer has:

* ``forward(x, training=True)`` -- computes the output; in training it keeps
  in ``self.cache`` what its own backward needs (inference keeps nothing, so
  predicting stays light);
* ``backward(dout) -> dx`` -- takes dL/d(output), stores dL/d(parameter) in
  ``grads`` and returns dL/d(input), from the cache of the last training
  forward call of *this* layer;
* ``params`` and ``grads`` -- dicts with the same keys (``"W"``, ``"b"``,
  ``"gamma"``, ``"beta"``). Layers read their weights from ``params`` at every
  call, so replacing an entry (say, with a float64 copy for a gradient check)
  takes effect at once. Optimisers update ``params`` in place from ``grads``.

These are the textbook layers: their bodies are the formulas the notebooks
derive. ``Conv2D``, ``MaxPool2D`` and ``AvgPool2D`` pick an implementation
tier from a table (``impl=``): ``"naive"`` loops, ``"im2col"`` (the default,
notebook 06) or ``"fast"`` (``cnnlib.fast``, notebook 10); all compute the
same numbers. The fused conv -> ReLU -> pool layer lives in ``cnnlib.fast``.

Layers keep the dtype they are given: float32 weights and float32 images stay
float32. Mixing float32 weights with float64 images is refused rather than
silently upcast (see ``Sequential.astype``).
"""
import numbers

import numpy as np
from scipy.special import expit

from . import fast
from . import functional as Fn
from .functional import check_float

__all__ = ["Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "ReLU", "Sigmoid", "Tanh",
           "Flatten", "Dense", "Dropout", "BatchNorm2D", "BatchNorm1D", "init_std"]


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


def _whole(layer, name, value, smallest=1):
    """value as an int >= smallest, or a clear error naming the layer and argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < smallest:
        kind = "a positive integer" if smallest == 1 else f"an integer >= {smallest}"
        raise ValueError(f"{layer}: {name} must be {kind}, got {value!r}")
    return int(value)


def _pair(layer, name, value):
    """An int or a pair of ints (height, width), each positive."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{layer}: {name} must be an integer or a pair (height, width), "
                             f"got {value!r}")
        return tuple(_whole(layer, name, v) for v in value)
    v = _whole(layer, name, value)
    return v, v


def _tier(layer, tiers, impl):
    if impl not in tiers:
        raise ValueError(f"{layer}: impl must be one of {sorted(tiers)}, got {impl!r}")
    return tiers[impl]


class Layer:
    """Base class: empty ``params``/``grads``, ``layer(x)`` calls forward.

    ``per_sample``: in training, does each sample's output depend only on that
    sample (and the weights)? True for most layers; False for batch norm
    (batch statistics) and active dropout (one random stream). Data-parallel
    training (cnnlib.parallel) splits a batch only across per-sample layers.
    """

    per_sample = True

    def __init__(self):
        self.params, self.grads = {}, {}
        self.cache = None

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def _cached(self):
        if self.cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward: no cache; call "
                               "forward(x, training=True) first (inference keeps none)")
        return self.cache


class Conv2D(Layer):
    """2-D convolution (cross-correlation) with a bias per filter.

    x: (N, C, H, W) -> out: (N, F, OH, OW), OH = (H + 2 * pad - KH) // stride + 1.
    params: W (F, C, KH, KW), b (F,).

    ``impl`` picks the tier from ``TIERS``: ``"im2col"`` (default, notebook
    06), ``"naive"`` (loops) or ``"fast"`` (cnnlib.fast, batch-last output);
    all compute the same numbers. ``input_grad=False`` skips dL/dx, for a
    first layer whose input is the image.
    """

    TIERS = {"naive": (Fn.conv2d_forward_naive, Fn.conv2d_backward_naive),
             "im2col": (Fn.conv2d_forward_im2col, Fn.conv2d_backward_im2col),
             "fast": (fast.conv2d_forward_fast, fast.conv2d_backward_fast)}

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, pad=0, *,
                 init="he", rng=None, dtype=np.float32, impl="im2col", input_grad=True):
        super().__init__()
        self.in_channels = _whole("Conv2D", "in_channels", in_channels)
        out_channels = _whole("Conv2D", "out_channels", out_channels)
        kh, kw = _pair("Conv2D", "kernel_size", kernel_size)
        self.stride = _whole("Conv2D", "stride", stride)
        self.pad = _whole("Conv2D", "pad", pad, smallest=0)
        self._forward, self._backward = _tier("Conv2D", self.TIERS, impl)
        self.impl, self.input_grad = impl, input_grad
        std = init_std(init, self.in_channels * kh * kw, out_channels * kh * kw)
        shape = (out_channels, self.in_channels, kh, kw)
        self.params["W"] = (std * _rng(rng).standard_normal(shape)).astype(dtype)
        self.params["b"] = np.zeros(out_channels, dtype=dtype)

    def __repr__(self):
        F, C, KH, KW = self.params["W"].shape
        return (f"Conv2D({C}, {F}, kernel_size={(KH, KW)}, stride={self.stride}, pad={self.pad}, "
                f"impl={self.impl!r})")

    def forward(self, x, training=True):
        self.cache = None                # free the last step's buffers before making new ones
        Fn.check_images(x, "Conv2D input", channels=self.in_channels)
        check_float(x, "Conv2D", self.params["W"].dtype)
        out, cache = self._forward(x, self.params["W"], self.params["b"], self.stride, self.pad)
        self.cache = cache if training else None
        return out

    def backward(self, dout):
        dx, self.grads["W"], self.grads["b"] = self._backward(dout, self._cached(), self.input_grad)
        return dx


class _Pool(Layer):
    """Shared constructor and forward/backward of the pooling layers."""

    TIERS = {}

    def __init__(self, size=2, stride=None, impl=None):
        super().__init__()
        name = type(self).__name__
        self.size = _whole(name, "size", size)
        self.stride = self.size if stride is None else _whole(name, "stride", stride)
        self.impl = self.DEFAULT if impl is None else impl
        self._forward, self._backward = _tier(name, self.TIERS, self.impl)

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, stride={self.stride}, impl={self.impl!r})"

    def forward(self, x, training=True):
        self.cache = None                # free the last step's buffers before making new ones
        check_float(x, type(self).__name__)
        out, cache = self._forward(x, self.size, self.stride)
        self.cache = cache if training else None
        return out

    def backward(self, dout):
        return self._backward(dout, self._cached())


class MaxPool2D(_Pool):
    """Max-pooling over size x size windows. No parameters.

    x: (N, C, H, W) -> (N, C, OH, OW), OH = (H - size) // stride + 1;
    stride defaults to size. The gradient goes to each window's first maximum.
    ``impl``: "im2col" (default), "naive" or "fast".
    """

    DEFAULT = "im2col"
    TIERS = {"naive": (Fn.maxpool2d_forward_naive, Fn.maxpool2d_backward_naive),
             "im2col": (Fn.maxpool2d_forward_im2col, Fn.maxpool2d_backward_im2col),
             "fast": (fast.maxpool2d_forward_fast, fast.maxpool2d_backward_fast)}


class AvgPool2D(_Pool):
    """Average pooling over size x size windows. x: (N, C, H, W) -> (N, C, OH, OW).

    ``impl``: "fast" (default: the mean of size*size strided views; average
    pooling needs no argmax, so there is no separate im2col tier) or "naive".
    """

    DEFAULT = "fast"
    TIERS = {"naive": (Fn.avgpool2d_forward_naive, Fn.avgpool2d_backward_naive),
             "fast": (fast.avgpool2d_forward_fast, fast.avgpool2d_backward_fast)}


class ReLU(Layer):
    """max(x, 0), elementwise, any shape. The gradient at exactly 0 is taken as 0."""

    def forward(self, x, training=True):
        check_float(x, "ReLU")
        self.cache = x > 0 if training else None
        return np.maximum(x, 0, dtype=x.dtype)

    def backward(self, dout):
        return dout * self._cached()


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed without overflow for any x."""

    def forward(self, x, training=True):
        check_float(x, "Sigmoid")
        out = expit(x)
        self.cache = out if training else None
        return out

    def backward(self, dout):
        out = self._cached()
        return dout * out * (1 - out)


class Tanh(Layer):
    """tanh(x), elementwise."""

    def forward(self, x, training=True):
        check_float(x, "Tanh")
        out = np.tanh(x)
        self.cache = out if training else None
        return out

    def backward(self, dout):
        return dout * (1 - self._cached() ** 2)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C * H * W), in (c, h, w) order as PyTorch flattens."""

    def forward(self, x, training=True):
        self.cache = x.shape if training else None
        return x.reshape(len(x), -1)

    def backward(self, dout):
        return dout.reshape(self._cached())


class Dense(Layer):
    """Fully connected layer: x: (N, in) @ W: (in, out) + b: (out,) -> (N, out)."""

    def __init__(self, in_features, out_features, *, init="he", rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = _whole("Dense", "in_features", in_features)
        out_features = _whole("Dense", "out_features", out_features)
        std = init_std(init, self.in_features, out_features)
        W = std * _rng(rng).standard_normal((self.in_features, out_features))
        self.params["W"] = W.astype(dtype)
        self.params["b"] = np.zeros(out_features, dtype=dtype)

    def __repr__(self):
        return f"Dense({self.params['W'].shape[0]}, {self.params['W'].shape[1]})"

    def forward(self, x, training=True):
        check_float(x, "Dense", self.params["W"].dtype)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Dense: expected input (N, {self.in_features}), got shape {x.shape}"
                             + (" (add a Flatten layer before it)" if x.ndim > 2 else ""))
        self.cache = x if training else None
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dout):
        x = self._cached()
        self.grads["W"] = x.T @ dout
        self.grads["b"] = dout.sum(axis=0)
        # dx = dout @ W.T, computed as (W @ dout.T).T: the same numbers, laid out with
        # the batch last in memory, as the fast layers keep activations (notebook 10)
        return (self.params["W"] @ dout.T).T


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability p and
    scale the rest by 1 / (1 - p), so inference needs no rescaling.
    The cache is the mask (the zeros and the scale)."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be a number in [0, 1), got {p!r}")
        self.p, self.rng = p, _rng(rng)

    def __repr__(self):
        return f"Dropout(p={self.p})"

    @property
    def per_sample(self):
        return self.p == 0               # the masks come from one random stream

    def forward(self, x, training=True):
        check_float(x, "Dropout")
        if not training:
            self.cache = None
            return x
        if self.p == 0:
            self.cache = x.dtype.type(1)
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.p
        self.cache = keep * x.dtype.type(1 / (1 - self.p))
        return x * self.cache

    def backward(self, dout):
        return dout * self._cached()


class _BatchNorm(Layer):
    """Shared code for BatchNorm1D/2D; ``axes`` are the axes averaged over.

    Training: normalise with the batch mean and (biased) variance and update
    ``running = momentum * running + (1 - momentum) * batch`` (the running
    variance uses the unbiased batch variance, as PyTorch does). Inference:
    normalise with the running statistics. Note ``momentum=0.9`` here equals
    PyTorch's ``momentum=0.1``.

    Every statistic is a sum over the batch. When cnnlib.parallel splits a
    batch over threads it sets ``gather_parts`` to a function that gives every
    part the arrays of all parts (an all-gather between threads), so each part
    normalises with the statistics of the whole batch (synchronised batch
    norm). Each pass makes one such exchange: the parts wait for each other
    at every one.
    """

    axes = None
    per_sample = False                   # batch statistics

    def __init__(self, channels, eps=1e-5, momentum=0.9, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        self.channels = _whole(name, "channels", channels)
        if not (isinstance(eps, numbers.Real) and eps >= 0):
            raise ValueError(f"{name}: eps must be a number >= 0, got {eps!r}")
        if not (isinstance(momentum, numbers.Real) and 0 <= momentum <= 1):
            raise ValueError(f"{name}: momentum must be a number in [0, 1], got {momentum!r}")
        self.eps, self.momentum = eps, momentum
        self.params["gamma"] = np.ones(self.channels, dtype=dtype)
        self.params["beta"] = np.zeros(self.channels, dtype=dtype)
        self.buffers = {"running_mean": np.zeros(self.channels, dtype=dtype),
                        "running_var": np.ones(self.channels, dtype=dtype)}
        self.gather_parts = None

    def __repr__(self):
        return f"{type(self).__name__}({self.channels})"

    def _shape(self, v):
        return v.reshape((1, -1) + (1,) * (len(self.axes) - 1))

    def _whole_batch(self, m, mean, squares):
        """A split batch: this part's count m, mean and sum of squared deviations
        per channel -> the whole batch's (m, mean, variance) and the shift that
        re-centres this part's x - mean on the whole batch's mean. One exchange;
        the parts are combined in float64 as in Chan et al.'s parallel variance:
        squares_total = sum of (squares_part + m_part * (mean_part - mean)**2)."""
        part = np.concatenate(([m], mean, squares)).astype(np.float64)
        counts, means, squares = np.split(np.array(self.gather_parts(part)), [1, 1 + self.channels], axis=1)
        m_all = counts.sum()
        mean_all = (counts * means).sum(axis=0) / m_all
        var = (squares + counts * (means - mean_all) ** 2).sum(axis=0) / m_all
        dtype = mean.dtype
        return int(m_all), mean_all.astype(dtype), var.astype(dtype), (mean - mean_all).astype(dtype)

    def forward(self, x, training=True):
        self.cache = None                # free the last step's buffers before making new ones
        check_float(x, type(self).__name__, self.params["gamma"].dtype)
        expected_ndim = len(self.axes) + 1
        if x.ndim != expected_ndim or x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__}: expected {expected_ndim}-D input with "
                             f"{self.channels} channels on axis 1, got shape {x.shape}")
        if training:
            m = x.size // self.channels                               # values per channel
            mean = x.sum(axis=self.axes) / m
            centred = x - self._shape(mean)
            squares = (centred * centred).sum(axis=self.axes)
            var = squares / m
            if self.gather_parts is not None:                         # a split batch (see above)
                m, mean, var, shift = self._whole_batch(m, mean, squares)
                centred += self._shape(shift)
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm *= self.momentum
            rm += (1 - self.momentum) * mean
            rv *= self.momentum
            rv += (1 - self.momentum) * var * (m / max(m - 1, 1))
        else:
            m, mean, var = None, self.buffers["running_mean"], self.buffers["running_var"]
            centred = x - self._shape(mean)
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat = centred                   # (x - mean) / std, in place: one array less to write
        xhat *= self._shape(inv_std)
        self.cache = (xhat, inv_std, m) if training else None
        out = xhat * self._shape(self.params["gamma"])
        out += self._shape(self.params["beta"])
        return out

    def backward(self, dout):
        xhat, inv_std, m = self._cached()
        self.grads["gamma"] = (dout * xhat).sum(axis=self.axes)
        self.grads["beta"] = dout.sum(axis=self.axes)
        dxhat = dout * self._shape(self.params["gamma"])
        # d/dx of (x - mean) / std, with mean and std depending on x too (notebook 08):
        # dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / std, means over the batch
        sums = dxhat.sum(axis=self.axes), (dxhat * xhat).sum(axis=self.axes)
        if self.gather_parts is not None:                 # a split batch: both sums in one exchange
            sums = np.split(sum(self.gather_parts(np.concatenate(sums))), 2)
        mean_dxhat, mean_dxhat_xhat = sums[0] / m, sums[1] / m
        dx = xhat * self._shape(mean_dxhat_xhat)   # the same formula, in place: fewer arrays to write
        np.subtract(dxhat, dx, out=dx)
        dx -= self._shape(mean_dxhat)
        dx *= self._shape(inv_std)
        return dx


class BatchNorm2D(_BatchNorm):
    """Batch normalisation per channel. x: (N, C, H, W); gamma, beta: (C,)."""
    axes = (0, 2, 3)


class BatchNorm1D(_BatchNorm):
    """Batch normalisation per feature. x: (N, D); gamma, beta: (D,)."""
    axes = (0,)
