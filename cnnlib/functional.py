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
  activations batch-last in memory ``(C, H, W, N)`` behind an ``(N, C, H, W)``
  view, so copies and comparisons run over long contiguous stretches and the
  matrix products need no transposed copies.
* ``conv2d_maxpool2d_forward`` / ``_backward`` -- convolution, ReLU and
  max-pooling fused into one operation; ``cnnlib.nets.Sequential`` uses it
  wherever those layers follow each other. Details at "fast path" below.

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
    "conv2d_maxpool2d_forward", "conv2d_maxpool2d_backward",
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
    return out


def maxpool2d_naive(x, size=2, stride=None):
    """Reference max-pooling. x: (N, C, H, W) -> (N, C, OH, OW),
    OH = (H - size) // stride + 1; stride defaults to size."""
    return _pool_naive(x, size, stride, np.max)


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
    return _pool_naive(x, size, stride, np.mean)


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
# Why it is faster than the classic version. A training step of SimpleConvNet
# is ~4 MFLOP per image: the matrix products are small, and most of the
# classic version's time goes into moving memory around (im2col and col2im
# for pooling, argmax, fancy indexing, transposed copies). The fast path:
#
# 1. Batch-last memory. Activations are (N, C, H, W) arrays whose memory is
#    ordered (C, H, W, N): a transposed *view*, so x[n, c, h, w] means what it
#    always means. With the batch innermost, every piece the fast path cuts out
#    of an image batch -- one per kernel offset, one per pooling offset -- is a
#    run of N (or more) neighbouring numbers that NumPy copies and compares
#    with vector instructions, instead of isolated floats.
# 2. One strided copy per kernel offset (25 for a 5x5 kernel), not one per
#    window, and one GEMM whose output is already the batch-last activation.
# 3. Max-pooling is separable: the max over a k x k window is the max over its
#    k rows of the max over its k columns: 2k views instead of k*k, and no
#    im2col, argmax or col2im. Masks "this one beat the earlier ones" route
#    the gradient back.
# 4. Gradients come back in the memory order of the forward activations, so
#    no layer copies an array to transpose it; BLAS takes transposed operands
#    for free. The first layer skips the gradient of the image.
# 5. Convolution -> ReLU -> max-pooling fused (conv2d_maxpool2d_forward): the
#    GEMM writes the four members of every 2x2 window into four separate
#    contiguous blocks, so pooling is three np.maximum calls over whole
#    blocks, and ReLU runs after pooling on a quarter of the numbers.
# 6. (cnnlib.train.ParallelStep) Two threads, each on half the batch.


def _batch_last(x):
    """(C, H, W, N) memory of x: free when x is already batch-last, else one copy."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def _as_images(xt):
    """(N, C, H, W) view of a batch-last (C, H, W, N) array."""
    return xt.transpose(3, 0, 1, 2)


def conv2d_forward(x, w, b, stride=1, pad=0):
    """Fast convolution: one strided copy per kernel offset, one GEMM.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) -> out: (N, F, OH, OW) and a
    cache for conv2d_backward. ``out`` is batch-last in memory (see above).
    """
    _check_conv_args(x, w, b)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, stride, pad), conv_output_size(W, KW, stride, pad)
    xt = _batch_last(x)                                    # (C, H, W, N)
    if pad:
        xt = np.pad(xt, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    cols = np.empty((C, KH, KW, OH, OW, N), dtype=x.dtype)
    for i, j, rows, cs in _offsets(KH, KW, stride, OH, OW):
        cols[:, i, j] = xt[:, rows, cs]                    # runs of N (stride 1: OW*N) numbers
    cols = cols.reshape(C * KH * KW, OH * OW * N)
    out = w.reshape(F, -1) @ cols                          # (F, OH*OW*N)
    out += b[:, None]
    return _as_images(out.reshape(F, OH, OW, N)), (x.shape, cols, w, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of conv2d_forward. dout: (N, F, OH, OW).

    Returns (dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,)). Skipping
    dx (``need_dx=False``) saves a GEMM and the fold for the first layer,
    whose input is the image and needs no gradient.
    """
    (N, C, H, W), cols, w, stride, pad = cache
    F, _, KH, KW = w.shape
    OH, OW = dout.shape[2:]
    dout = _batch_last(dout).reshape(F, -1)               # free: dout comes back batch-last
    db = dout.sum(axis=1)
    dw = (dout @ cols.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = (w.reshape(F, -1).T @ dout).reshape(C, KH, KW, OH, OW, N)
    dxt = np.zeros((C, H + 2 * pad, W + 2 * pad, N), dtype=dcols.dtype)
    for i, j, rows, cs in _offsets(KH, KW, stride, OH, OW):
        dxt[:, rows, cs] += dcols[:, i, j]                 # overlapping windows accumulate
    return _as_images(dxt[:, pad:pad + H, pad:pad + W]), dw, db


def _running_max(views, masks=True):
    """Elementwise max of same-shape views, and for each view after the first a
    mask "beats every earlier view" (strict >, so a tie keeps the earlier one).
    ``masks=False`` (inference) skips the masks."""
    if len(views) == 1:
        return views[0].copy(order="K"), []
    best = np.maximum(views[0], views[1])
    wins = [views[1] > views[0]] if masks else []
    for v in views[2:]:
        if masks:
            wins.append(v > best)
        np.maximum(best, v, out=best)
    return best, wins


def _running_max_backward(dout, wins, views, overlap):
    """Send dout to the view that won: the last one whose mask is set, else the first.

    ``views`` are views of the gradient array being filled. Where pooling
    windows overlap they share elements, so contributions are added;
    otherwise each element is written once.
    """
    rest = dout
    for win, view in zip(reversed(wins), reversed(views[1:])):
        if overlap:
            taken = rest * win
            view += taken
        else:
            taken = np.multiply(rest, win, out=view)
        rest = rest - taken
    if overlap:
        views[0] += rest
    else:
        views[0][...] = rest


def maxpool2d_forward(x, size=2, stride=None):
    """Fast max-pooling, separable: max over rows of the max over columns.

    x: (N, C, H, W) -> out: (N, C, OH, OW), OH = (H - size) // stride + 1.
    Works for overlapping windows (stride < size) and sizes that do not divide
    H. Ties send the gradient to the first maximum in row-major order (the
    column pass keeps the leftmost, the row pass the topmost), as PyTorch does.
    """
    check_images(x)
    stride = size if stride is None else stride
    _, _, H, W = x.shape
    OH, OW = conv_output_size(H, size, stride), conv_output_size(W, size, stride)
    span_h, span_w = stride * (OH - 1) + 1, stride * (OW - 1) + 1
    row_max, col_wins = _running_max([x[:, :, :, j:j + span_w:stride] for j in range(size)])
    out, row_wins = _running_max([row_max[:, :, i:i + span_h:stride] for i in range(size)])
    return out, (x.shape, size, stride, row_max.shape, col_wins, row_wins)


def maxpool2d_backward(dout, cache):
    """Gradient of maxpool2d_forward: dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
    (N, C, H, W), size, stride, row_max_shape, col_wins, row_wins = cache
    OH, OW = dout.shape[2:]
    span_h, span_w = stride * (OH - 1) + 1, stride * (OW - 1) + 1
    overlap = stride < size
    # Start from zeros unless the windows tile the axis exactly (every element
    # gets written once). Both arrays are batch-last, like the activations.
    alloc = np.empty if stride == size and OH * size == H else np.zeros
    d_row_max = _as_images(alloc(row_max_shape[1:] + (N,), dtype=dout.dtype))
    _running_max_backward(dout, row_wins,
                          [d_row_max[:, :, i:i + span_h:stride] for i in range(size)], overlap)
    alloc = np.empty if stride == size and OW * size == W else np.zeros
    dx = _as_images(alloc((C, H, W, N), dtype=dout.dtype))
    _running_max_backward(d_row_max, col_wins,
                          [dx[:, :, :, j:j + span_w:stride] for j in range(size)], overlap)
    return dx


def _space_to_depth_shape(x_shape, pad, P):
    N, C, H, W = x_shape
    return C, P, P, -(-(H + 2 * pad) // P), -(-(W + 2 * pad) // P), N


def _space_to_depth(x, pad, P):
    """Zero-padded x as xs[c, u, v, R, Q, n] = x[n, c, P*R + u - pad, P*Q + v - pad]:
    row and column indices split into (index // P, index % P), batch last.
    One copy of the input; pixels P apart become neighbours in memory."""
    N, C, H, W = x.shape
    _, _, _, HS, WS, _ = _space_to_depth_shape(x.shape, pad, P)
    extra_h, extra_w = P * HS - H - pad, P * WS - W - pad     # >= pad: fill up to whole blocks
    if extra_h == extra_w == pad == 0:
        xp = x
    else:
        xp = np.pad(x, ((0, 0), (0, 0), (pad, extra_h), (pad, extra_w)))
    return np.ascontiguousarray(xp.reshape(N, C, HS, P, WS, P).transpose(1, 3, 5, 2, 4, 0))


def _depth_to_space(xs, x_shape, pad):
    """Inverse of _space_to_depth, cropped: (N, C, H, W), batch-last."""
    N, C, H, W = x_shape
    _, P, _, HS, WS, _ = xs.shape
    xt = xs.transpose(0, 3, 1, 4, 2, 5).reshape(C, HS * P, WS * P, N)
    return _as_images(xt[:, pad:pad + H, pad:pad + W])


def _pool_blocks(xs, kh, kw, stride, size, ph, pw):
    """For kernel offset (i, j) and window member (di, dj): the (C, PH, PW, N)
    block of a space-to-depth array that those positions of all windows read,
    with contiguous runs of PW * N numbers."""
    P = xs.shape[1]
    for i in range(kh):
        for j in range(kw):
            for di in range(size):
                for dj in range(size):
                    r, c = stride * di + i, stride * dj + j
                    yield i, j, di, dj, xs[:, r % P, c % P, r // P:r // P + ph, c // P:c // P + pw]


def conv2d_maxpool2d_forward(x, w, b, stride=1, pad=0, size=2, relu=False, keep_cache=True):
    """Convolution [-> ReLU] -> max-pooling over non-overlapping size x size
    windows, fused. The same numbers as the three layers one after the other.

    The trick is the order of the GEMM's output columns: the size*size members
    of every pooling window land in size*size separate contiguous blocks, so
    pooling is an elementwise maximum of whole blocks. ReLU commutes with max
    (relu(max(v)) == max(relu(v)), also for ties and the gradient), so it runs
    after pooling, on size*size times fewer numbers. Windows that do not fit
    (H not divisible) are dropped, as in maxpool2d_forward, so the conv outputs
    they would read are never computed.

    x: (N, C, H, W) -> out: (N, F, PH, PW), batch-last, and a cache
    (None when ``keep_cache=False``, for inference).
    """
    _check_conv_args(x, w, b)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, stride, pad), conv_output_size(W, KW, stride, pad)
    PH, PW = conv_output_size(OH, size, size), conv_output_size(OW, size, size)
    # cols[c, i, j, di, dj, ph, pw, n] = x[n, c, row, col] for kernel offset
    # (i, j) and member (di, dj) of pooling window (ph, pw): input row
    # P * ph + stride * di + i, with P = stride * size the distance between
    # windows (likewise for columns). One block copy per (i, j, di, dj).
    P = stride * size
    xs = _space_to_depth(x, pad, P)
    cols = np.empty((C, KH, KW, size, size, PH, PW, N), dtype=x.dtype)
    for i, j, di, dj, block in _pool_blocks(xs, KH, KW, stride, size, PH, PW):
        cols[:, i, j, di, dj] = block
    cols = cols.reshape(C * KH * KW, -1)
    conv = (w.reshape(F, -1) @ cols).reshape(F, size * size, PH * PW * N)
    conv += b[:, None, None]
    # the size*size members of each window, in row-major order: contiguous blocks
    out, wins = _running_max([conv[:, k] for k in range(size * size)], masks=keep_cache)
    positive = out > 0 if relu and keep_cache else None
    if relu:
        np.maximum(out, 0, out=out)
    cache = (x.shape, cols, w, stride, pad, size, wins, positive) if keep_cache else None
    return _as_images(out.reshape(F, PH, PW, N)), cache


def conv2d_maxpool2d_backward(dout, cache, need_dx=True):
    """Gradients of conv2d_maxpool2d_forward: dout (N, F, PH, PW) ->
    (dx (N, C, H, W) or None, dw, db)."""
    (N, C, H, W), cols, w, stride, pad, size, wins, positive = cache
    F, _, KH, KW = w.shape
    PH, PW = dout.shape[2:]
    g = _batch_last(dout).reshape(F, -1)                  # free when dout is batch-last
    if positive is not None:
        g = g * positive
    # Each pooled gradient goes to one member of its window: db sums g itself.
    db = g.sum(axis=1)
    dconv = np.empty((F, size * size, g.shape[1]), dtype=g.dtype)
    _running_max_backward(g, wins, [dconv[:, k] for k in range(size * size)], overlap=False)
    dconv = dconv.reshape(F, -1)
    dw = (dconv @ cols.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = (w.reshape(F, -1).T @ dconv).reshape(C, KH, KW, size, size, PH, PW, N)
    P = stride * size
    dxs = np.zeros(_space_to_depth_shape((N, C, H, W), pad, P), dtype=dcols.dtype)
    for i, j, di, dj, block in _pool_blocks(dxs, KH, KW, stride, size, PH, PW):
        block += dcols[:, i, j, di, dj]                   # overlapping windows accumulate
    return _depth_to_space(dxs, (N, C, H, W), pad), dw, db


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
