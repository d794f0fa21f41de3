"""Convolution and pooling as pure functions: the tiers the notebooks teach.

Every operation comes in tiers that compute the same numbers and share one
contract, so a layer picks its tier from a table::

    out, cache = <op>_forward_<tier>(x, ...)       # forward, and what backward needs
    grads      = <op>_backward_<tier>(dout, cache)

* ``*_naive``  -- plain Python loops over output positions (notebooks 04-06).
  The reference: slow, but each line is the formula from the notebooks.
* ``*_im2col`` -- the classic formulation ("Deep Learning from Scratch",
  CS231n; notebook 06): unfold every window into a row of a big matrix
  (im2col), do one matrix product, fold gradients back with col2im.
* ``*_fast``   -- the tier that is built for speed lives in its own module,
  ``cnnlib.fast`` (notebook 10), with the same signatures.

Convolution: ``conv2d_forward_<tier>(x, w, b, stride=1, pad=0) -> (out, cache)``
and ``conv2d_backward_<tier>(dout, cache, need_dx=True) -> (dx, dw, db)``.
Max-pooling: ``maxpool2d_forward_<tier>(x, size=2, stride=None) -> (out, cache)``
and ``maxpool2d_backward_<tier>(dout, cache) -> dx``; average pooling likewise.

Shapes: images ``x: (N, C, H, W)``, filters ``w: (F, C, KH, KW)``, bias
``b: (F,)``. Output size along each axis::

    OH = (H + 2 * pad - KH) // stride + 1

"Convolution" here means cross-correlation (no kernel flip), as in every deep
learning framework; notebook 01 explains the difference.
"""
import numpy as np

__all__ = [
    "conv_output_size", "check_images", "check_float",
    "conv2d_forward_naive", "conv2d_backward_naive",
    "conv2d_forward_im2col", "conv2d_backward_im2col", "im2col", "col2im",
    "maxpool2d_forward_naive", "maxpool2d_backward_naive",
    "maxpool2d_forward_im2col", "maxpool2d_backward_im2col",
    "avgpool2d_forward_naive", "avgpool2d_backward_naive",
]


# ----------------------------------------------------------------- checks ---
def conv_output_size(size, kernel, stride=1, pad=0):
    """Output length of a convolution or pooling along one axis.

    ``(size + 2 * pad - kernel) // stride + 1``; positions that do not fit a
    whole window are dropped (floor), as in PyTorch.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if kernel > size + 2 * pad:
        raise ValueError(
            f"kernel size {kernel} is larger than the padded input "
            f"{size + 2 * pad} (input {size}, pad {pad})")
    return (size + 2 * pad - kernel) // stride + 1


def check_images(x, name="x", channels=None):
    """Raise a clear error unless ``x`` is a float array ``(N, C, H, W)``."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array (N, C, H, W), got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected 4 dimensions (N, C, H, W), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a float array, got dtype {x.dtype} "
                        "(convert images with x.astype(np.float32) / 255)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels (axis 1), "
                         f"got shape {x.shape} with {x.shape[1]}")


def check_float(x, name, expected_dtype=None):
    """Raise a clear error unless ``x`` is a float NumPy array (of
    ``expected_dtype``, if given: mixed dtypes are refused, never upcast)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array, got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name}: expected a float array, got dtype {x.dtype} "
                        "(convert images with x.astype(np.float32) / 255)")
    if expected_dtype is not None and x.dtype != expected_dtype:
        raise TypeError(f"{name}: input is {x.dtype} but the weights are {expected_dtype}; "
                        f"cast the input with x.astype(np.{expected_dtype}) or the "
                        f"network with net.astype(np.{x.dtype})")


def _check_conv_args(x, w, b):
    check_images(x)
    if w.ndim != 4:
        raise ValueError(f"w: expected 4 dimensions (F, C, KH, KW), got shape {w.shape}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"w has {w.shape[1]} input channels (shape {w.shape}) "
                         f"but x has {x.shape[1]} (shape {x.shape})")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"b: expected shape ({w.shape[0]},), got {b.shape}")


def _pad(x, pad, value=0.0):
    if pad == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=value)


def _offsets(kh, kw, stride, oh, ow):
    """Row and column slices of the elements every window takes at kernel
    offset (i, j): ``x[..., rows, cols]`` is one (OH, OW) strided view holding
    element (i, j) of every window, so looping over the KH*KW offsets touches
    all windows at once."""
    for i in range(kh):
        for j in range(kw):
            yield (i, j, slice(i, i + stride * (oh - 1) + 1, stride),
                   slice(j, j + stride * (ow - 1) + 1, stride))


def _window_slices(kh, kw, stride, oh, ow):
    """The same as _offsets, as ready-made index tuples ``x[window]``."""
    for i, j, rows, cols in _offsets(kh, kw, stride, oh, ow):
        yield i, j, (Ellipsis, rows, cols)


# ------------------------------------------------------ naive references ---
def conv2d_forward_naive(x, w, b, stride=1, pad=0):
    """Reference convolution with loops. x: (N, C, H, W), w: (F, C, KH, KW),
    b: (F,) -> out: (N, F, OH, OW) and the cache (x, w, stride, pad)."""
    _check_conv_args(x, w, b)
    N, _, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, stride, pad), conv_output_size(W, KW, stride, pad)
    xp = _pad(x, pad)
    out = np.zeros((N, F, OH, OW), dtype=np.result_type(x, w))
    for n in range(N):
        for f in range(F):
            for r in range(OH):
                for c in range(OW):
                    window = xp[n, :, r * stride:r * stride + KH, c * stride:c * stride + KW]
                    out[n, f, r, c] = np.sum(window * w[f]) + b[f]
    return out, (x, w, stride, pad)


def conv2d_backward_naive(dout, cache, need_dx=True):
    """Reference gradients with loops: each output element sends
    ``dout * w[f]`` back to its window and ``dout * window`` to ``w[f]``.
    dout: (N, F, OH, OW) -> dx: (N, C, H, W) (None if not need_dx),
    dw: (F, C, KH, KW), db: (F,)."""
    x, w, stride, pad = cache
    N, _, H, W = x.shape
    F, _, KH, KW = w.shape
    _, _, OH, OW = dout.shape
    xp = _pad(x, pad)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for n in range(N):
        for f in range(F):
            for r in range(OH):
                for c in range(OW):
                    rs, cs = r * stride, c * stride
                    dxp[n, :, rs:rs + KH, cs:cs + KW] += dout[n, f, r, c] * w[f]
                    dw[f] += dout[n, f, r, c] * xp[n, :, rs:rs + KH, cs:cs + KW]
    db = dout.sum(axis=(0, 2, 3))
    return (dxp[:, :, pad:pad + H, pad:pad + W] if need_dx else None), dw, db


def _pool_naive(x, size, stride, reduce):
    check_images(x)
    stride = size if stride is None else stride
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, size, stride), conv_output_size(W, size, stride)
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for r in range(OH):
        for c in range(OW):
            window = x[:, :, r * stride:r * stride + size, c * stride:c * stride + size]
            out[:, :, r, c] = reduce(window, axis=(2, 3))
    return out, (x, size, stride)


def maxpool2d_forward_naive(x, size=2, stride=None):
    """Reference max-pooling. x: (N, C, H, W) -> (N, C, OH, OW),
    OH = (H - size) // stride + 1; stride defaults to size."""
    return _pool_naive(x, size, stride, np.max)


def maxpool2d_backward_naive(dout, cache):
    """Reference: each window's gradient goes to its (first) maximum."""
    x, size, stride = cache
    N, C, _, _ = x.shape
    _, _, OH, OW = dout.shape
    dx = np.zeros_like(x)
    for n in range(N):
        for ch in range(C):
            for r in range(OH):
                for c in range(OW):
                    window = x[n, ch, r * stride:r * stride + size, c * stride:c * stride + size]
                    i, j = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, ch, r * stride + i, c * stride + j] += dout[n, ch, r, c]
    return dx


def avgpool2d_forward_naive(x, size=2, stride=None):
    """Reference average pooling. x: (N, C, H, W) -> (N, C, OH, OW)."""
    return _pool_naive(x, size, stride, np.mean)


def avgpool2d_backward_naive(dout, cache):
    """Reference: every element of a window gets dout / size**2 (overlaps add up)."""
    x, size, stride = cache
    dx = np.zeros_like(x, dtype=dout.dtype)
    share = dout / (size * size)
    for r in range(dout.shape[2]):
        for c in range(dout.shape[3]):
            dx[:, :, r * stride:r * stride + size, c * stride:c * stride + size] += share[:, :, r:r + 1, c:c + 1]
    return dx


# --------------------------------------------------------- classic im2col ---
def im2col(x, kh, kw, stride=1, pad=0):
    """Unfold every (C, KH, KW) window of x: (N, C, H, W) into one row.

    Returns cols: (N * OH * OW, C * KH * KW), rows ordered (n, oh, ow) and
    columns (c, kh, kw) -- so ``cols @ w.reshape(F, -1).T`` is the convolution.
    """
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    xp = _pad(x, pad)
    cols = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for i, j, window in _window_slices(kh, kw, stride, OH, OW):
        cols[:, :, i, j] = xp[window]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(N * OH * OW, -1)


def col2im(cols, x_shape, kh, kw, stride=1, pad=0):
    """Adjoint of im2col: add each row back onto the window it came from.

    cols: (N * OH * OW, C * KH * KW) -> (N, C, H, W). Where windows overlap,
    contributions accumulate, so ``<im2col(x), y> == <x, col2im(y)>``.
    """
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = cols.reshape(N, OH, OW, C, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i, j, window in _window_slices(kh, kw, stride, OH, OW):
        xp[window] += cols[:, :, i, j]
    return xp[:, :, pad:pad + H, pad:pad + W]


def conv2d_forward_im2col(x, w, b, stride=1, pad=0):
    """Classic im2col convolution: x: (N, C, H, W), w: (F, C, KH, KW), b: (F,)
    -> out: (N, F, OH, OW) and a cache for conv2d_backward_im2col."""
    _check_conv_args(x, w, b)
    N, _, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, stride, pad), conv_output_size(W, KW, stride, pad)
    cols = im2col(x, KH, KW, stride, pad)                 # (N*OH*OW, C*KH*KW)
    out = cols @ w.reshape(F, -1).T + b                   # (N*OH*OW, F)
    out = out.reshape(N, OH, OW, F).transpose(0, 3, 1, 2)
    return out, (x.shape, cols, w, stride, pad)


def conv2d_backward_im2col(dout, cache, need_dx=True):
    """Gradients of conv2d_forward_im2col: dout: (N, F, OH, OW) ->
    (dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,))."""
    x_shape, cols, w, stride, pad = cache
    F, _, KH, KW = w.shape
    dout = dout.transpose(0, 2, 3, 1).reshape(-1, F)      # (N*OH*OW, F)
    db = dout.sum(axis=0)
    dw = (cols.T @ dout).T.reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = dout @ w.reshape(F, -1)
    return col2im(dcols, x_shape, KH, KW, stride, pad), dw, db


def maxpool2d_forward_im2col(x, size=2, stride=None):
    """Classic max-pooling: im2col each channel's windows, take the row max.
    x: (N, C, H, W) -> (N, C, OH, OW) and a cache (the argmax of every window)."""
    check_images(x)
    stride = size if stride is None else stride
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, size, stride), conv_output_size(W, size, stride)
    cols = im2col(x, size, size, stride).reshape(-1, size * size)   # one window per row
    argmax = np.argmax(cols, axis=1)
    out = cols[np.arange(len(cols)), argmax].reshape(N, OH, OW, C).transpose(0, 3, 1, 2)
    return out, (x.shape, argmax, size, stride)


def maxpool2d_backward_im2col(dout, cache):
    """Route each gradient to its window's argmax, then col2im."""
    x_shape, argmax, size, stride = cache
    dcols = np.zeros((argmax.size, size * size), dtype=dout.dtype)
    dcols[np.arange(argmax.size), argmax] = dout.transpose(0, 2, 3, 1).ravel()
    return col2im(dcols.reshape(-1, x_shape[1] * size * size), x_shape, size, size, stride)
