"""The fast path: every performance trick of cnnlib, in one module (notebook 10).

The teaching layers (``cnnlib.layers``) compute with the tiers notebooks 04-06
derive. This module holds the third tier, ``*_fast``, with the same contract
as ``cnnlib.functional``::

    out, cache = conv2d_forward_fast(x, w, b, stride=1, pad=0)
    dx, dw, db = conv2d_backward_fast(dout, cache, need_dx=True)
    out, cache = maxpool2d_forward_fast(x, size=2, stride=None)
    dx         = maxpool2d_backward_fast(dout, cache)

and one fused operation with a layer of its own, ``FusedConvPool``
(convolution [-> ReLU] -> max-pooling), which a model author chooses
explicitly: ``fuse(conv, relu, pool)`` or ``fuse_layers(layers)``, as
``cnnlib.nets.SimpleConvNet(fast=True)`` does. It stands in ``net.layers``
under its own name; nothing is swapped in behind the reader's back.

Why it is faster than the classic im2col tier. A training step of
SimpleConvNet is ~4 MFLOP per image: the matrix products are small, and most
of the classic version's time goes into moving memory around (im2col and
col2im for pooling, argmax, fancy indexing, transposed copies). Here:

1. Batch-last memory. Outputs are (N, C, H, W) arrays whose memory is
   ordered (C, H, W, N): a transposed *view*, so x[n, c, h, w] means what it
   always means and every other layer works on it unchanged. With the batch
   innermost, every piece cut out of an image batch -- one per kernel
   offset, one per pooling offset -- is a run of N (or more) neighbouring
   numbers that NumPy copies and compares with vector instructions.
2. One strided copy per kernel offset (25 for a 5x5 kernel), not one per
   window, and one GEMM whose output is already the batch-last activation.
3. Max-pooling is separable: the max over a k x k window is the max over its
   k rows of the max over its k columns: 2k views instead of k*k, and no
   im2col, argmax or col2im. Masks "this one beat the earlier ones" route
   the gradient back.
4. Convolution -> ReLU -> max-pooling fused: the GEMM writes the four
   members of every 2x2 window into four separate contiguous blocks, so
   pooling is three np.maximum calls over whole blocks, and ReLU (which
   commutes with max) runs after pooling on a quarter of the numbers.
5. The first layer skips the gradient of the image (``input_grad=False``).
6. Data parallelism over a split batch: ``cnnlib.parallel``.
7. Freed memory is kept for the next step (``keep_freed_memory``), not
   handed back to the operating system and faulted in again.
8. Single calls, timed one by one: ReLU against a row of zeros (against the
   scalar 0, NumPy's maximum misses its fastest loop) and bias gradients as
   ``g @ ones`` (``_row_sums``).
"""
import ctypes

import numpy as np

from .functional import _check_conv_args, _offsets, _window_slices, check_float, check_images, conv_output_size

__all__ = ["conv2d_forward_fast", "conv2d_backward_fast",
           "maxpool2d_forward_fast", "maxpool2d_backward_fast",
           "avgpool2d_forward_fast", "avgpool2d_backward_fast",
           "conv2d_relu_maxpool2d_forward_fast", "conv2d_relu_maxpool2d_backward_fast",
           "FusedConvPool", "fuse", "fuse_layers", "keep_freed_memory"]


# --------------------------------------------------------- batch-last memory ---
def _batch_last(x):
    """(C, H, W, N) memory of x: free when x is already batch-last, else one copy."""
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def _as_images(xt):
    """(N, C, H, W) view of a batch-last (C, H, W, N) array."""
    return xt.transpose(3, 0, 1, 2)


def _row_sums(a):
    """a.sum(axis=1) for a 2-D array, as the matrix-vector product a @ ones: BLAS
    sums long rows faster than NumPy's pairwise summation, and rounds a little
    more (a few float32 steps for a bias gradient; notebook 10, §8)."""
    return a @ np.ones(a.shape[1], a.dtype)


# -------------------------------------------------------------- convolution ---
def conv2d_forward_fast(x, w, b, stride=1, pad=0):
    """Fast convolution: one strided copy per kernel offset, one GEMM.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) -> out: (N, F, OH, OW),
    OH = (H + 2 * pad - KH) // stride + 1, and a cache for
    conv2d_backward_fast. ``out`` is batch-last in memory (see above).
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


def conv2d_backward_fast(dout, cache, need_dx=True):
    """Gradients of conv2d_forward_fast. dout: (N, F, OH, OW), any memory order.

    Returns (dx: (N, C, H, W) or None, dw: (F, C, KH, KW), db: (F,)). Skipping
    dx (``need_dx=False``) saves a GEMM and the fold for the first layer,
    whose input is the image and needs no gradient.
    """
    (N, C, H, W), cols, w, stride, pad = cache
    F, _, KH, KW = w.shape
    OH, OW = dout.shape[2:]
    dout = _batch_last(dout).reshape(F, -1)               # free when dout is batch-last
    db = _row_sums(dout)
    dw = (dout @ cols.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = (w.reshape(F, -1).T @ dout).reshape(C, KH, KW, OH, OW, N)
    dxt = np.zeros((C, H + 2 * pad, W + 2 * pad, N), dtype=dcols.dtype)
    for i, j, rows, cs in _offsets(KH, KW, stride, OH, OW):
        dxt[:, rows, cs] += dcols[:, i, j]                 # overlapping windows accumulate
    return _as_images(dxt[:, pad:pad + H, pad:pad + W]), dw, db


# --------------------------------------------------------------- max-pooling ---
def _running_max(views, masks=True, out=None):
    """Elementwise max of same-shape views, and for each view after the first a
    mask "beats every earlier view" (strict >, so a tie keeps the earlier one).
    ``masks=False`` (inference) skips the masks. ``out``: where to write the
    max, a new array by default; views[0] itself when it is not needed after."""
    if len(views) == 1:
        return views[0].copy(order="K"), []
    wins = [views[1] > views[0]] if masks else []      # before the max: out may be views[0]
    best = np.maximum(views[0], views[1], out=out)
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
    if overlap:
        rest = dout
        for win, view in zip(reversed(wins), reversed(views[1:])):
            taken = rest * win
            view += taken
            rest = rest - taken
        views[0] += rest
        return
    # No overlap: the first view is written by nothing else, so it holds what is
    # left at every step, and no array is allocated
    if not wins:
        views[0][...] = dout
    rest = dout
    for win, view in zip(reversed(wins), reversed(views[1:])):
        taken = np.multiply(rest, win, out=view)
        rest = np.subtract(rest, taken, out=views[0])


def maxpool2d_forward_fast(x, size=2, stride=None):
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


def maxpool2d_backward_fast(dout, cache):
    """Gradient of maxpool2d_forward_fast: dout: (N, C, OH, OW) -> dx: (N, C, H, W)."""
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


# ----------------------------------------------------------- average pooling ---
def avgpool2d_forward_fast(x, size=2, stride=None):
    """Average pooling as the mean of the size*size strided views (one per
    window offset). x: (N, C, H, W) -> (N, C, OH, OW)."""
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


def avgpool2d_backward_fast(dout, cache):
    """Gradient of avgpool2d_forward_fast: every window element gets dout / size**2."""
    x_shape, size, stride, slices = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    share = dout * dout.dtype.type(1.0 / (size * size))
    for window in slices:
        dx[window] += share
    return dx


# ------------------------------------------------- fused conv -> ReLU -> pool ---
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


# Below this many rows (C * KH * KW) the im2col matrix is thin and its GEMMs
# slow; the fused layer then works on the window patches in both passes
# instead. Notebook 10 times SimpleConvNet's 25 rows; with 288 rows (notebook
# 08's 32 channels, 3x3) the im2col route measured faster.
_THIN = 64


def _window_patches(xs, kh, kw, stride, size, ph, pw):
    """patches[r, c, q, ph, pw, n] = the input (channel c) under pooling window
    (ph, pw) at row r, column q of the window's patch: the size x size members
    of a window read overlapping kh x kw fields that together cover one patch
    of (stride * (size - 1) + kh) x (stride * (size - 1) + kw) pixels. For a
    5x5 kernel and 2x2 pooling: 36 rows of PH * PW * N numbers, where the
    im2col matrix has 25 rows of 4 * PH * PW * N (the four members side by
    side). Returned as a (patch rows * C * patch columns, PH * PW * N) matrix;
    rows ordered (r, c, q), so the pixel rows one row of members reads are a
    slice."""
    C, P, N = xs.shape[0], xs.shape[1], xs.shape[-1]
    eh, ew = stride * (size - 1) + kh, stride * (size - 1) + kw
    patches = np.empty((eh, C, ew, ph, pw, N), dtype=xs.dtype)
    for r in range(eh):
        for q in range(ew):
            patches[r, :, q] = xs[:, r % P, q % P, r // P:r // P + ph, q // P:q // P + pw]
    return patches.reshape(eh * C * ew, -1)


def _member_kernels(w, stride, size):
    """The kernel as seen by each window member: placed in a patch-sized grid
    of zeros at the member's offset. Rows (di, dj, f), columns (r, c, q) as
    the rows of _window_patches."""
    F, C, KH, KW = w.shape
    eh, ew = stride * (size - 1) + KH, stride * (size - 1) + KW
    wide = np.zeros((size, size, F, eh, C, ew), dtype=w.dtype)
    for di in range(size):
        for dj in range(size):
            wide[di, dj, :, stride * di:stride * di + KH, :, stride * dj:stride * dj + KW] = \
                w.transpose(0, 2, 1, 3)
    return wide.reshape(size * size * F, -1)


def _fold_member_kernels(dw_patch, w_shape, stride, size):
    """The adjoint of _member_kernels, for the weight gradient:
    dw_patch[(di, dj, f), (r, c, q)] is the gradient of a kernel as large as
    the patch, for window member (di, dj), whose field starts at row
    stride * di, column stride * dj of the patch. The true kernel's gradient
    is the sum of the members' fields."""
    F, C, KH, KW = w_shape
    eh, ew = stride * (size - 1) + KH, stride * (size - 1) + KW
    dw_patch = dw_patch.reshape(size, size, F, eh, C, ew)
    dw = np.zeros((F, KH, C, KW), dtype=dw_patch.dtype)
    for di in range(size):
        for dj in range(size):
            dw += dw_patch[di, dj, :, stride * di:stride * di + KH, :, stride * dj:stride * dj + KW]
    return dw.transpose(0, 2, 1, 3).copy()


def _members_from_patches(patches, w, stride, size):
    """Every member of every window, as size*size contiguous (F, PH * PW * N)
    blocks in row-major member order: _member_kernels(w) @ patches, one GEMM
    per row of members. Members in row di read only pixel rows stride * di to
    stride * di + KH - 1 of their patch, a slice of its rows: the other rows
    would be multiplied by the zeros around the placed kernels."""
    F, C, KH, KW = w.shape
    width = C * (stride * (size - 1) + KW)             # patch rows per row of pixels
    placed = _member_kernels(w, stride, size).reshape(size, size * F, -1)
    members = []
    for di in range(size):
        rows = slice(stride * di * width, (stride * di + KH) * width)
        conv = placed[di][:, rows] @ patches[rows]                       # rows (dj, f)
        members += list(conv.reshape(size, F, -1))
    return members


def conv2d_relu_maxpool2d_forward_fast(x, w, b, stride=1, pad=0, size=2, relu=True,
                                       keep_cache=True):
    """Convolution [-> ReLU] -> max-pooling over non-overlapping size x size
    windows, fused. The same numbers as the three layers one after the other.

    The trick is the order of the GEMM's output (its columns; its rows in the
    window-patch route): the size*size members of every pooling window land
    in size*size separate contiguous blocks, so pooling is an elementwise
    maximum of whole blocks. ReLU commutes with max
    (relu(max(v)) == max(relu(v)), also for ties and the gradient), and so does
    adding a filter's bias (max(v + b) == max(v) + b), so both run after
    pooling, on size*size times fewer numbers. Windows that do not fit
    (H not divisible) are dropped, as in max-pooling, so the conv outputs
    they would read are never computed.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) -> out: (N, F, PH, PW),
    PH = OH // size with OH the convolution's output size; batch-last. The
    cache is None when ``keep_cache=False`` (inference).
    """
    _check_conv_args(x, w, b)
    N, C, H, W = x.shape
    F, _, KH, KW = w.shape
    OH, OW = conv_output_size(H, KH, stride, pad), conv_output_size(W, KW, stride, pad)
    PH, PW = conv_output_size(OH, size, size), conv_output_size(OW, size, size)
    P = stride * size
    xs = _space_to_depth(x, pad, P)
    patched = C * KH * KW < _THIN
    if patched:
        # A thin im2col matrix (see _THIN): copy each window's input patch once and
        # multiply it by the kernel placed at every member's offset in the patch.
        kept = _window_patches(xs, KH, KW, stride, size, PH, PW)
        members = _members_from_patches(kept, w, stride, size)
    else:
        # cols[c, i, j, di, dj, ph, pw, n] = x[n, c, row, col] for kernel offset
        # (i, j) and member (di, dj) of pooling window (ph, pw): input row
        # P * ph + stride * di + i, with P = stride * size the distance between
        # windows (likewise for columns). One block copy per (i, j, di, dj).
        cols = np.empty((C, KH, KW, size, size, PH, PW, N), dtype=x.dtype)
        for i, j, di, dj, block in _pool_blocks(xs, KH, KW, stride, size, PH, PW):
            cols[:, i, j, di, dj] = block
        cols = cols.reshape(C * KH * KW, -1)
        conv = (w.reshape(F, -1) @ cols).reshape(F, size * size, -1)  # columns (di, dj, ph, pw, n)
        members = [conv[:, k] for k in range(size * size)]
        kept = cols
    # either way, the size*size members of each window in row-major order, each an
    # (F, PH * PW * N) view whose rows are contiguous
    # Patched, members[0] is a contiguous block that nothing reads after this: the max goes
    # there, not into a new array (the output then keeps its GEMM's 2F rows alive, not F).
    # In the im2col route members[0] is a strided view into all of conv.
    out, wins = _running_max(members, masks=keep_cache, out=members[0] if patched else None)
    out += b[:, None]                    # a filter's bias shifts its whole window: add it after the max
    positive = out > 0 if relu and keep_cache else None
    if relu:
        # against a row of zeros, not the scalar 0: maximum's fastest loop needs every operand
        # to step one number along the innermost axis, not stand still (notebook 10, §8)
        np.maximum(out, np.zeros(out.shape[1], out.dtype), out=out)
    cache = (x.shape, kept, w, stride, pad, size, wins, positive, patched) if keep_cache else None
    return _as_images(out.reshape(F, PH, PW, N)), cache


def conv2d_relu_maxpool2d_backward_fast(dout, cache, need_dx=True):
    """Gradients of conv2d_relu_maxpool2d_forward_fast: dout (N, F, PH, PW),
    any memory order -> (dx (N, C, H, W) or None, dw, db)."""
    (N, C, H, W), kept, w, stride, pad, size, wins, positive, patched = cache
    F, _, KH, KW = w.shape
    PH, PW = dout.shape[2:]
    dout_t = dout.transpose(1, 2, 3, 0)                   # (F, PH, PW, N) view
    if positive is not None:                              # ReLU's mask; one pass also lays
        g = np.multiply(dout_t, positive.reshape(dout_t.shape), order="C")   # out g batch-last
    else:
        g = np.ascontiguousarray(dout_t)
    g = g.reshape(F, -1)
    # Each pooled gradient goes to one member of its window: db sums g itself.
    db = _row_sums(g)
    if patched:                   # members as rows, as _member_kernels has them
        dconv = np.empty((size * size, F, g.shape[1]), dtype=g.dtype)
        _running_max_backward(g, wins, list(dconv), overlap=False)
        dw = _fold_member_kernels(dconv.reshape(size * size * F, -1) @ kept.T, w.shape, stride, size)
        dconv = dconv.transpose(1, 0, 2)                  # a view in im2col's order, for dx
    else:                         # members as columns, as in the im2col matrix
        dconv = np.empty((F, size * size, g.shape[1]), dtype=g.dtype)
        _running_max_backward(g, wins, [dconv[:, k] for k in range(size * size)], overlap=False)
        dw = (dconv.reshape(F, -1) @ kept.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    # The input gradient takes the im2col way in both routes: dcols, scattered back.
    dcols = (w.reshape(F, -1).T @ dconv.reshape(F, -1)).reshape(C, KH, KW, size, size, PH, PW, N)
    P = stride * size
    dxs = np.zeros(_space_to_depth_shape((N, C, H, W), pad, P), dtype=dcols.dtype)
    for i, j, di, dj, block in _pool_blocks(dxs, KH, KW, stride, size, PH, PW):
        block += dcols[:, i, j, di, dj]                   # overlapping windows accumulate
    return _depth_to_space(dxs, (N, C, H, W), pad), dw, db


class FusedConvPool:
    """Conv2D [-> ReLU] -> MaxPool2D as one layer, computed by
    conv2d_relu_maxpool2d_forward_fast. Build it with ``fuse``.

    It owns nothing new: ``params`` is the convolution's own dict (the same
    arrays), so optimisers, ``cnnlib.io`` and gradient checks see the
    convolution's W and b; ``fused`` lists the layers it stands for.
    Same numbers as the layers one by one (tested), several times faster.
    x: (N, C, H, W) -> (N, F, PH, PW), batch-last in memory.
    """

    per_sample = True                    # see cnnlib.layers.Layer

    def __init__(self, conv, relu, pool):
        self.conv, self.relu, self.pool = conv, relu, pool
        self.fused = tuple(layer for layer in (conv, relu, pool) if layer is not None)
        self.params, self.grads = conv.params, conv.grads
        self.cache = None

    def __repr__(self):
        F, C, KH, KW = self.params["W"].shape
        parts = [f"Conv2D({C}, {F}, kernel_size={(KH, KW)}, stride={self.conv.stride}, "
                 f"pad={self.conv.pad})"]
        parts += ["ReLU"] if self.relu is not None else []
        parts += [f"MaxPool2D(size={self.pool.size})"]
        return f"FusedConvPool({' -> '.join(parts)})"

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def forward(self, x, training=True):
        conv = self.conv
        self.cache = None                # free the last step's buffers before making new ones
        check_images(x, "FusedConvPool input", channels=conv.in_channels)
        check_float(x, "FusedConvPool", conv.params["W"].dtype)
        out, cache = conv2d_relu_maxpool2d_forward_fast(
            x, conv.params["W"], conv.params["b"], conv.stride, conv.pad, self.pool.size,
            relu=self.relu is not None, keep_cache=training)
        self.cache = cache
        return out

    def backward(self, dout):
        if self.cache is None:
            raise RuntimeError("FusedConvPool.backward: no cache; call forward(x, training=True) "
                               "first (inference keeps none)")
        dx, self.grads["W"], self.grads["b"] = conv2d_relu_maxpool2d_backward_fast(
            dout, self.cache, self.conv.input_grad)
        return dx


def _textbook_layers():
    # Imported here, not at the top: cnnlib.layers imports this module's
    # kernels for its impl="fast" tier.
    from .layers import Conv2D, MaxPool2D, ReLU
    return Conv2D, ReLU, MaxPool2D


def fuse(conv, relu, pool):
    """FusedConvPool for ``conv`` (a Conv2D), ``relu`` (a ReLU, or None) and
    ``pool`` (a MaxPool2D with non-overlapping windows, stride == size)."""
    Conv2D, ReLU, MaxPool2D = _textbook_layers()
    if not (isinstance(conv, Conv2D) and (relu is None or isinstance(relu, ReLU))
            and isinstance(pool, MaxPool2D)):
        got = tuple(type(layer).__name__ for layer in (conv, relu, pool))
        raise TypeError(f"fuse: expected (Conv2D, ReLU or None, MaxPool2D), got {got}")
    if pool.stride != pool.size:
        raise ValueError(f"fuse: the pooling windows must not overlap (stride == size), "
                         f"got {pool!r}")
    return FusedConvPool(conv, relu, pool)


def fuse_layers(layers):
    """The list ``layers`` with every Conv2D [-> ReLU] -> MaxPool2D (stride ==
    size) replaced by one FusedConvPool sharing its weights; other layers as
    they are. The model author calls this; Sequential never fuses by itself."""
    Conv2D, ReLU, MaxPool2D = _textbook_layers()
    out, i = [], 0
    while i < len(layers):
        relu = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], ReLU) else None
        k = i + (2 if relu is not None else 1)
        pool = layers[k] if k < len(layers) else None
        if isinstance(layers[i], Conv2D) and isinstance(pool, MaxPool2D) and pool.stride == pool.size:
            out.append(FusedConvPool(layers[i], relu, pool))
            i = k + 1
        else:
            out.append(layers[i])
            i += 1
    return out


# ------------------------------------------------------------------ memory ---
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3        # mallopt parameters, from glibc's malloc.h


def keep_freed_memory():
    """Ask the C library's allocator to keep freed memory for the next arrays.

    NumPy takes the memory of every new array from malloc. glibc (Linux)
    hands large freed blocks back to the operating system, and trims its
    heap when much of it is free, so in the next training step arrays of the
    same size get fresh pages, which the kernel zero-fills at the first
    touch: a page fault per page. With 32-channel convolutions (notebook 08)
    that is thousands of faults per step. This sets glibc to serve blocks up to 32 MiB from its own heap
    and to keep up to 1 GiB of freed heap, so a step reuses the pages of the
    last one. Process-wide and lasting: the process stays at its peak
    memory instead of shrinking between steps. ``train.fit`` calls it.

    Returns True if the allocator took the setting, False where there is no
    glibc (macOS, Windows, musl): nothing changes there.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt          # the C library this process runs on
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
