"""Convolution and pooling as pure functions, three ways each.

Every operation exists in up to three versions that compute the same numbers:

* ``*_naive``  -- plain Python loops over output positions. The reference:
  slow, but each line is the formula from the notebooks.
* ``*_im2col`` -- the classic formulation ("Deep Learning from Scratch",
  CS231n): unfold every window into a row of a big matrix (im2col), do one
  matrix product, fold gradients back with col2im.
* ``conv2d_forward`` / ``maxpool2d_forward`` / ... without suffix -- the fast
  path the layers use. It gathers windows by looping over the *kernel offsets*
  (25 strided copies for a 5x5 kernel) instead of over the *windows*, and keeps
  activations in channel-major memory ``(C, N, H, W)`` behind an ``(N, C, H, W)``
  view, so the matrix products need no transposed copies.

Shapes: images ``x: (N, C, H, W)``, filters ``w: (F, C, KH, KW)``, bias
``b: (F,)``. Output size along each axis::

    OH = (H + 2 * pad - KH) // stride + 1

"Convolution" here means cross-correlation (no kernel flip), as in every deep
learning framework; notebook 01 explains the difference.
"""
import numpy as np

__all__ = [
    "conv_output_size",
    "conv2d_naive", "conv2d_backward_naive",
    "im2col", "col2im", "conv2d_im2col", "conv2d_backward_im2col",
    "conv2d_forward", "conv2d_backward",
    "maxpool2d_naive", "maxpool2d_backward_naive",
    "maxpool2d_im2col", "maxpool2d_backward_im2col",
    "maxpool2d_forward", "maxpool2d_backward",
    "avgpool2d_naive", "avgpool2d_forward", "avgpool2d_backward",
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


def _window_slices(kh, kw, stride, oh, ow):
    """Index of the elements every window takes at each kernel offset (i, j).

    ``x[..., rows, cols]`` for offset (i, j) is an (OH, OW) strided view holding
    element (i, j) of every window: looping over the KH*KW offsets touches all
    windows at once.
    """
    for i in range(kh):
        for j in range(kw):
            yield i, j, (Ellipsis, slice(i, i + stride * (oh - 1) + 1, stride),
                         slice(j, j + stride * (ow - 1) + 1, stride))


# ------------------------------------------------------ naive references ---
def conv2d_naive(x, w, b, stride=1, pad=0):
    """Reference convolution with loops. x: (N, C, H, W), w: (F, C, KH, KW),
    b: (F,) -> out: (N, F, OH, OW)."""
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
    return out


def conv2d_backward_naive(dout, x, w, stride=1, pad=0):
    """Reference gradients with loops: each output element sends
    ``dout * w[f]`` back to its window and ``dout * window`` to ``w[f]``.
    Returns dx: (N, C, H, W), dw: (F, C, KH, KW), db: (F,)."""
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
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db


def maxpool2d_naive(x, size=2, stride=None):
    """Reference max-pooling. x: (N, C, H, W) -> (N, C, OH, OW),
    OH = (H - size) // stride + 1; stride defaults to size."""
    check_images(x)
    stride = size if stride is None else stride
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, size, stride), conv_output_size(W, size, stride)
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for r in range(OH):
        for c in range(OW):
            window = x[:, :, r * stride:r * stride + size, c * stride:c * stride + size]
            out[:, :, r, c] = window.max(axis=(2, 3))
    return out


def maxpool2d_backward_naive(dout, x, size=2, stride=None):
    """Reference: each window's gradient goes to its (first) maximum."""
    stride = size if stride is None else stride
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


def avgpool2d_naive(x, size=2, stride=None):
    """Reference average pooling. x: (N, C, H, W) -> (N, C, OH, OW)."""
    check_images(x)
    stride = size if stride is None else stride
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, size, stride), conv_output_size(W, size, stride)
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    for r in range(OH):
        for c in range(OW):
            out[:, :, r, c] = x[:, :, r * stride:r * stride + size,
                                c * stride:c * stride + size].mean(axis=(2, 3))
    return out


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


def conv2d_im2col(x, w, b, stride=1, pad=0):
    """Classic im2col convolution. Returns out: (N, F, OH, OW) and a cache."""
    _check_conv_args(x, w, b)
    N, _, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, stride, pad), conv_output_size(W, KW, stride, pad)
    cols = im2col(x, KH, KW, stride, pad)                 # (N*OH*OW, C*KH*KW)
    out = cols @ w.reshape(F, -1).T + b                   # (N*OH*OW, F)
    out = out.reshape(N, OH, OW, F).transpose(0, 3, 1, 2)
    return out, (x.shape, cols, w, stride, pad)


def conv2d_backward_im2col(dout, cache, need_dx=True):
    """Gradients of conv2d_im2col: returns (dx or None, dw, db)."""
    x_shape, cols, w, stride, pad = cache
    F, _, KH, KW = w.shape
    dout = dout.transpose(0, 2, 3, 1).reshape(-1, F)      # (N*OH*OW, F)
    db = dout.sum(axis=0)
    dw = (cols.T @ dout).T.reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = dout @ w.reshape(F, -1)
    return col2im(dcols, x_shape, KH, KW, stride, pad), dw, db


def maxpool2d_im2col(x, size=2, stride=None):
    """Classic max-pooling: im2col each channel's windows, take the row max."""
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


# -------------------------------------------------------------- fast path ---
def conv2d_forward(x, w, b, stride=1, pad=0):
    """Fast convolution: one strided copy per kernel offset, one GEMM.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) -> out: (N, F, OH, OW) and a
    cache for conv2d_backward. ``out`` is a view of an (F, N, OH, OW) array:
    the next layers work on it elementwise, and its gradient comes back in the
    same memory order, so the backward GEMMs read it without a copy.
    """
    _check_conv_args(x, w, b)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, stride, pad), conv_output_size(W, KW, stride, pad)
    xt = _pad(x.transpose(1, 0, 2, 3), pad)                # (C, N, H, W): free for our own outputs
    cols = np.empty((C, KH, KW, N, OH, OW), dtype=x.dtype)
    for i, j, window in _window_slices(KH, KW, stride, OH, OW):
        cols[:, i, j] = xt[window]                         # contiguous writes of (C, N, OH, OW)
    cols = cols.reshape(C * KH * KW, N * OH * OW)
    out = w.reshape(F, -1) @ cols                          # (F, N*OH*OW)
    out += b[:, None]
    out = out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)
    return out, (x.shape, cols, w, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of conv2d_forward. dout: (N, F, OH, OW).

    Returns (dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,)). Skipping
    dx (``need_dx=False``) saves a GEMM and the fold for the first layer,
    whose input is the image and needs no gradient.
    """
    (N, C, H, W), cols, w, stride, pad = cache
    F, _, KH, KW = w.shape
    OH, OW = dout.shape[2:]
    dout = dout.transpose(1, 0, 2, 3).reshape(F, N * OH * OW)   # free if dout is (F, N, ...) in memory
    db = dout.sum(axis=1)
    dw = (dout @ cols.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = (w.reshape(F, -1).T @ dout).reshape(C, KH, KW, N, OH, OW)
    dxt = np.zeros((C, N, H + 2 * pad, W + 2 * pad), dtype=dcols.dtype)
    for i, j, window in _window_slices(KH, KW, stride, OH, OW):
        dxt[window] += dcols[:, i, j]
    return dxt[:, :, pad:pad + H, pad:pad + W].transpose(1, 0, 2, 3), dw, db


def maxpool2d_forward(x, size=2, stride=None):
    """Fast max-pooling: a running maximum over the size*size strided views.

    x: (N, C, H, W) -> out: (N, C, OH, OW), OH = (H - size) // stride + 1.
    Works for overlapping windows (stride < size) and sizes that do not divide H.
    """
    check_images(x)
    stride = size if stride is None else stride
    _, _, H, W = x.shape
    OH, OW = conv_output_size(H, size, stride), conv_output_size(W, size, stride)
    slices = [window for _, _, window in _window_slices(size, size, stride, OH, OW)]
    out = x[slices[0]].copy(order="K")                     # order K keeps x's memory layout
    for window in slices[1:]:
        np.maximum(out, x[window], out=out)
    # One boolean mask per offset marks the windows whose *first* maximum
    # sits there, so ties send the gradient to one element (as PyTorch does).
    taken = np.zeros_like(out, dtype=bool)
    masks = []
    for window in slices:
        first = x[window] == out
        first &= ~taken
        taken |= first
        masks.append(first)
    return out, (x.shape, masks, size, stride, slices)


def maxpool2d_backward(dout, cache):
    """Gradient of maxpool2d_forward: dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    x_shape, masks, size, stride, slices = cache
    # dx in (C, N, H, W) memory order, like the conv output it flows back to.
    dx = np.zeros(x_shape[1::-1] + x_shape[2:], dtype=dout.dtype).transpose(1, 0, 2, 3)
    for first, window in zip(masks, slices):
        if stride >= size:                                 # windows don't overlap: write
            np.multiply(dout, first, out=dx[window])
        else:                                              # overlapping windows accumulate
            dx[window] += dout * first
    return dx


def avgpool2d_forward(x, size=2, stride=None):
    """Fast average pooling: the mean of the size*size strided views."""
    check_images(x)
    stride = size if stride is None else stride
    _, _, H, W = x.shape
    OH, OW = conv_output_size(H, size, stride), conv_output_size(W, size, stride)
    slices = [window for _, _, window in _window_slices(size, size, stride, OH, OW)]
    out = x[slices[0]].copy(order="K")
    for window in slices[1:]:
        out += x[window]
    out *= x.dtype.type(1.0 / (size * size))
    return out, (x.shape, size, stride, slices)


def avgpool2d_backward(dout, cache):
    """Gradient of avgpool2d_forward: every window element gets dout / size**2."""
    x_shape, size, stride, slices = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    share = dout * dout.dtype.type(1.0 / (size * size))
    for window in slices:
        dx[window] += share
    return dx
