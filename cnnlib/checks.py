"""Self-checks for the exercises: run your function, read a specific verdict.

In a ``your-turn`` cell::

    from cnnlib import checks

    def my_im2col(x, kh, kw, stride, pad):
        ...                                  # your code

    checks.im2col(my_im2col)

A check calls your function on a few small, seeded cases (several shapes,
strides and paddings; ties for pooling), compares each result with cnnlib's
reference and prints one verdict: ``all 5 cases correct``, or the first thing
that is wrong -- which case, the expected and the actual shape, or the first
wrong value -- and, when it recognises the mistake, its likely cause. It
returns True or False. A wrong answer never raises: an exception in your
function is reported in one line. The verdicts show inputs and expected
numbers, never the reference code.

=======================  =======================================  ==========================
check                    your function                            returns
=======================  =======================================  ==========================
output_size              fn(size, kernel, stride, pad)            an int
correlate2d              fn(image, kernel), 2-D, 'valid'          (H - KH + 1, W - KW + 1)
conv_forward             fn(x, w, b, stride, pad)                 out (N, F, OH, OW)
conv_backward            fn(dout, x, w, stride, pad)              (dx, dw, db)
im2col                   fn(x, kh, kw, stride, pad)               cols (N*OH*OW, C*KH*KW)
col2im                   fn(cols, x_shape, kh, kw, stride, pad)   x (N, C, H, W)
maxpool_forward          fn(x, size, stride)                      out (N, C, OH, OW)
maxpool_backward         fn(dout, x, size, stride)                dx; a tie: first max wins
relu_backward            fn(dout, x)                              dx (0 where x == 0)
softmax_cross_entropy    fn(logits, labels)                       (mean loss, dlogits)
dense_backward           fn(dout, x, W)                           (dx, dW, db)
numerical_gradient       fn(f, x); f() reads x                    dF/dx; x left unchanged
=======================  =======================================  ==========================

``gradients(analytic, numeric)`` prints the relative error of two gradients
and what its size means (notebook 03's table). ``compare(answer, expected)``
checks any other answer against an expected array the same way.
"""
import warnings

import numpy as np

from . import functional as Fn
from .gradcheck import relative_error
from .losses import SoftmaxCrossEntropy

__all__ = ["output_size", "correlate2d", "conv_forward", "conv_backward", "im2col", "col2im",
           "maxpool_forward", "maxpool_backward", "relu_backward", "softmax_cross_entropy",
           "dense_backward", "numerical_gradient", "compare", "gradients"]

RTOL, ATOL = 1e-5, 1e-6   # loose enough for float32 answers, tight enough for any real mistake


# ------------------------------------------------------------- machinery ---
class _Case:
    """One call of the student's function: a label for the verdict, the
    arguments, the expected result and the recognisable mistakes ``causes``:
    (output name or None, test, message); a test is a wrong answer (array),
    a wrong shape (tuple) or a predicate on the answer (function)."""

    def __init__(self, label, args, expected, causes=()):
        self.label, self.args, self.expected, self.causes = label, args, expected, list(causes)


def _say(name, ok, lines):
    print(f"{name}: " + "\n  ".join(lines))
    return ok


def _exc(exc):
    text = str(exc).strip().splitlines()
    text = text[0] if text else ""
    return type(exc).__name__ + (f": {text[:200]}" if text else "")


class _Quiet:
    """Silence NumPy's floating-point warnings and any other warning: the
    verdict reports their consequence (NaN, inf) in its own words."""

    def __enter__(self):
        self._err, self._warn = np.errstate(all="ignore"), warnings.catch_warnings()
        self._err.__enter__()
        self._warn.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._warn.__exit__(*exc)
        self._err.__exit__(*exc)


def _call(fn, args):
    """fn(*args) on copies of the arrays, so an in-place change cannot spoil a later case."""
    with _Quiet():
        return fn(*[np.copy(a) if isinstance(a, np.ndarray) else a for a in args])


def _run(name, fn, cases, parts=None, want_int=False):
    """Call fn on every case; print the verdict on the first failing one."""
    if not callable(fn):
        return _say(name, False, [f"expected a function, got {type(fn).__name__} "
                                  "(pass the function itself: checks.x(my_fn), not checks.x(my_fn()))"])
    for k, case in enumerate(cases, 1):
        where = f" in case {k} of {len(cases)} ({case.label})" if len(cases) > 1 else ""
        try:
            got = _call(fn, case.args)
        except Exception as exc:
            return _say(name, False, [f"your function raised {_exc(exc)}" + where.replace(" in", ", in", 1)])
        try:
            with _Quiet():
                problem = _problem(got, case, parts, want_int)
        except Exception as exc:   # an answer too strange to compare
            problem = ["an answer that cannot be compared", f"{_exc(exc)} (got {type(got).__name__})"]
        if problem:
            return _say(name, False, [problem[0] + where] + problem[1:])
    return _say(name, True, [f"all {len(cases)} cases correct" if len(cases) > 1 else "correct"])


def _problem(got, case, parts, want_int):
    if got is None:
        return ["your function returned None", "not written yet? end it with `return` and the result"]
    if want_int and (isinstance(got, bool) or not isinstance(got, (int, np.integer))):
        return ["wrong type", f"expected an int, got {got!r} ({type(got).__name__}): "
                              "use // (floor division)"]
    if parts is None:
        return _compare(got, case.expected, None, case.causes)
    if not isinstance(got, (tuple, list)) or len(got) != len(parts):
        size = f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""
        return ["wrong type", f"expected a tuple ({', '.join(parts)}), got {type(got).__name__}{size}"]
    for part, g, e in zip(parts, got, case.expected):
        problem = _compare(g, e, part, case.causes)
        if problem:
            return problem
    return None


def _compare(got, expected, part, causes):
    """None if got matches expected, else [what is wrong, where, (likely cause)]."""
    of = f" of {part}" if part else ""
    if got is None:
        return [f"{part} is None", "not computed yet?"]
    e = np.asarray(expected, dtype=np.float64)
    try:
        g = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return [f"wrong type{of}",
                f"expected numbers of shape {e.shape}, got {type(got).__name__}"]
    causes = [(test, msg) for p, test, msg in causes if p == part]
    if g.shape != e.shape:
        return [f"wrong shape{of}", f"expected {e.shape}, got {g.shape}"] + \
            _likely(g, e, causes, _SHAPE_HINTS)
    bad = ~np.isclose(g, e, RTOL, ATOL)
    if not bad.any():
        return None
    if e.ndim == 0:
        where = f"expected {float(e):.6g}, got {float(g):.6g}"
    else:
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f"at index {idx}: expected {e[idx]:.6g}, got {g[idx]:.6g}"
    causes = [(test, msg) for test, msg in causes if not isinstance(test, tuple)]   # shapes agree
    return [f"wrong values{of}", where] + _likely(g, e, causes, _VALUE_HINTS)


def _matches(test, g):
    if callable(test):
        return bool(test(g))
    if isinstance(test, tuple):
        return g.shape == test
    test = np.asarray(test, dtype=np.float64)
    return g.shape == test.shape and np.allclose(g, test, RTOL, ATOL)


def _likely(g, e, causes, generic):
    """The first recognised mistake: the check's own list first, then generic ones."""
    for test, message in causes + [(lambda g, t=t: t(g, e), m) for t, m in generic]:
        try:
            if _matches(test, g):
                return ["likely cause: " + message]
        except Exception:   # a test that does not apply to this answer
            pass
    return []


def _factor(g, e):
    c = float(np.vdot(g, e) / np.vdot(e, e))
    return c if abs(c - 1) > 1e-3 and np.allclose(g, c * e, RTOL, ATOL) else None


_SHAPE_HINTS = [
    (lambda g, e: g.ndim >= 2 and g.shape == e.shape[::-1], "looks transposed"),
    (lambda g, e: g.ndim == e.ndim and max(abs(a - b) for a, b in zip(g.shape, e.shape)) == 1,
     "off by one in a size: the output size is (size + 2 * pad - kernel) // stride + 1"),
    (lambda g, e: g.size == e.size, "the right number of values in the wrong shape: check reshape and transpose"),
]
_VALUE_HINTS = [
    (lambda g, e: not np.all(np.isfinite(g)), "NaN or inf in your answer: an overflow (exp of a large number?) "
                                              "or a division by zero"),
    (lambda g, e: g.ndim >= 2 and np.allclose(np.swapaxes(g, -1, -2), e, RTOL, ATOL), "looks transposed"),
    (lambda g, e: np.allclose(g, -e, RTOL, ATOL), "the sign is flipped"),
    (lambda g, e: not g.any(), "all zeros: nothing was written into (or added to) the result"),
    (lambda g, e: _factor(g, e) is not None, "off by a constant factor: a missing or extra division?"),
    (lambda g, e: np.allclose(np.sort(g, axis=None), np.sort(e, axis=None), RTOL, ATOL),
     "the right values in the wrong order: check the order of the axes (reshape, transpose)"),
]


def _conv(x, w, b, stride, pad):
    return Fn.conv2d_forward_naive(x, w, b, stride, pad)[0]


def _conv_label(x, w, stride, pad):
    return f"x {x.shape}, w {w.shape}, stride {stride}, pad {pad}"


FLIPPED = "flipped kernel: you computed a convolution, not a cross-correlation"
CONV_CASES = [((1, 1, 4, 4), (1, 1, 2, 2), 1, 0), ((2, 3, 5, 5), (4, 3, 3, 3), 1, 0),
              ((2, 3, 5, 5), (4, 3, 3, 3), 1, 1), ((2, 2, 7, 6), (3, 2, 3, 3), 2, 1),
              ((1, 2, 6, 5), (3, 2, 2, 3), 2, 0)]


# ---------------------------------------------------------------- checks ---
def output_size(fn):
    """fn(size, kernel, stride, pad) -> the output length along one axis, an int."""
    cases = []
    for size, k, s, p in [(28, 5, 1, 0), (28, 5, 1, 2), (7, 3, 2, 1), (6, 3, 2, 0), (5, 5, 1, 0), (9, 3, 3, 0)]:
        causes = [(None, (size + p - k) // s + 1, "pad counted once: it is added on both sides (2 * pad)"),
                  (None, (size + 2 * p - k) // s, "forgot the + 1 (a kernel that just fits gives 1 output)"),
                  (None, size + 2 * p - k + 1, "stride ignored: divide by the stride"),
                  (None, -(-(size + 2 * p - k) // s) + 1, "rounded up: windows that do not fit are dropped, "
                                                           "so round down (//)"),
                  (None, (size + 2 * p - k + 1) // s, "the + 1 belongs after the division")]
        cases.append(_Case(f"size {size}, kernel {k}, stride {s}, pad {p}", (size, k, s, p),
                           Fn.conv_output_size(size, k, s, p), causes))
    return _run("output_size", fn, cases, want_int=True)


def correlate2d(fn):
    """fn(image (H, W), kernel (KH, KW)) -> the 'valid' cross-correlation (H - KH + 1, W - KW + 1)."""
    rng = np.random.default_rng(1)
    cases = []
    for shape, kshape in [((4, 4), (2, 2)), ((5, 6), (3, 2)), ((6, 5), (3, 3)), ((3, 3), (3, 3)), ((4, 5), (1, 1))]:
        image, kernel = rng.standard_normal(shape), rng.standard_normal(kshape)
        ref = _conv(image[None, None], kernel[None, None], np.zeros(1), 1, 0)[0, 0]
        flipped = _conv(image[None, None], kernel[None, None, ::-1, ::-1], np.zeros(1), 1, 0)[0, 0]
        full = (shape[0] + kshape[0] - 1, shape[1] + kshape[1] - 1)
        causes = [(None, flipped, FLIPPED),
                  (None, shape, "the output has the image's size ('same'): 'valid' keeps only the positions "
                                "where the whole kernel fits, (H - KH + 1, W - KW + 1)"),
                  (None, full, "that is the 'full' size: 'valid' is (H - KH + 1, W - KW + 1)")]
        cases.append(_Case(f"image {shape}, kernel {kshape}", (image, kernel), ref, causes))
    return _run("correlate2d", fn, cases)


def conv_forward(fn):
    """fn(x (N, C, H, W), w (F, C, KH, KW), b (F,), stride, pad) -> out (N, F, OH, OW)."""
    rng = np.random.default_rng(2)
    cases = []
    for xs, ws, s, p in CONV_CASES:
        x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
        ref = _conv(x, w, b, s, p)
        causes = [(None, ref - b[:, None, None], "missing bias: add b[f] to every output of filter f"),
                  (None, _conv(x, w[:, :, ::-1, ::-1], b, s, p), FLIPPED),
                  (None, ref.transpose(0, 2, 3, 1), "channels last: the output is (N, F, OH, OW)"),
                  (None, _conv(x, w, b, 1, p).shape, "stride ignored: windows start every `stride` pixels"),
                  (None, _conv(x, w, b, s, 0).shape, "padding ignored: pad the image with `pad` zeros on each side")]
        cases.append(_Case(_conv_label(x, w, s, p), (x, w, b, s, p), ref, causes))
    return _run("conv_forward", fn, cases)


def conv_backward(fn):
    """fn(dout (N, F, OH, OW), x, w, stride, pad) -> (dx, dw, db), the gradients of conv_forward."""
    rng = np.random.default_rng(3)
    cases = []
    for xs, ws, s, p in CONV_CASES:
        x, w = rng.standard_normal(xs), rng.standard_normal(ws)
        dout = rng.standard_normal(_conv(x, w, np.zeros(ws[0]), s, p).shape)
        dx, dw, db = Fn.conv2d_backward_naive(dout, (x, w, s, p))
        N, F, OH, OW = dout.shape
        causes = [("dx", (N, xs[1], xs[2] + 2 * p, xs[3] + 2 * p),
                   "dx still has the padding: cut `pad` rows and columns off each side"),
                  ("dx", Fn.conv2d_backward_naive(dout, (x, w[:, :, ::-1, ::-1].copy(), s, p))[0],
                   "flipped kernel: each output sends dout * w[f] (not flipped) back to its window"),
                  ("dw", dw[:, :, ::-1, ::-1], "dw is flipped: dw[f] adds dout * window, position by position"),
                  ("dw", dw / N, "dw divided by the batch size: add up every sample's contribution"),
                  ("db", (N, F), "db is also summed over the batch: axes (0, 2, 3)"),
                  ("db", db / (N * OH * OW), "db averaged: sum dout over axes (0, 2, 3)")]
        cases.append(_Case("dout " + str(dout.shape) + ", " + _conv_label(x, w, s, p),
                           (dout, x, w, s, p), (dx, dw, db), causes))
    return _run("conv_backward", fn, cases, parts=("dx", "dw", "db"))


IM2COL_CASES = [((1, 1, 4, 4), (2, 2), 1, 0), ((2, 3, 5, 5), (3, 3), 1, 0), ((2, 2, 5, 6), (3, 2), 2, 1),
                ((1, 3, 6, 6), (2, 2), 2, 0), ((2, 2, 4, 5), (3, 3), 1, 1)]


def im2col(fn):
    """fn(x (N, C, H, W), kh, kw, stride, pad) -> cols (N*OH*OW, C*KH*KW): one row per
    window, rows in (n, oh, ow) order, columns in (c, i, j) order."""
    rng = np.random.default_rng(4)
    cases = []
    for xs, (kh, kw), s, p in IM2COL_CASES:
        x = rng.standard_normal(xs)
        ref = Fn.im2col(x, kh, kw, s, p)
        N, C = xs[:2]
        OH, OW = Fn.conv_output_size(xs[2], kh, s, p), Fn.conv_output_size(xs[3], kw, s, p)
        rows = ref.reshape(N, OH, OW, C, kh, kw)
        causes = [(None, ref.T, "looks transposed: one row per window, one column per (c, i, j)"),
                  (None, rows.transpose(0, 1, 2, 4, 5, 3).reshape(ref.shape),
                   "columns in (i, j, c) order: cnnlib orders them (c, i, j), as w.reshape(F, -1) does"),
                  (None, rows.transpose(1, 2, 0, 3, 4, 5).reshape(ref.shape),
                   "rows ordered batch last: cnnlib orders them (n, oh, ow)"),
                  (None, rows.transpose(0, 2, 1, 3, 4, 5).reshape(ref.shape),
                   "windows taken column by column: go left to right, then top to bottom"),
                  (None, Fn.im2col(x, kh, kw, 1, p).shape, "stride ignored: windows start every `stride` pixels"),
                  (None, Fn.im2col(x, kh, kw, s, 0).shape, "padding ignored: pad with `pad` zeros on each side")]
        cases.append(_Case(f"x {xs}, kh {kh}, kw {kw}, stride {s}, pad {p}", (x, kh, kw, s, p), ref, causes))
    return _run("im2col", fn, cases)


def _col2im_overwrite(cols, x_shape, kh, kw, stride, pad):
    """The typical wrong col2im: '=' where overlapping windows must add."""
    N, C, H, W = x_shape
    OH, OW = Fn.conv_output_size(H, kh, stride, pad), Fn.conv_output_size(W, kw, stride, pad)
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    rows = cols.reshape(N, OH, OW, C, kh, kw)
    for n, r, c in np.ndindex(N, OH, OW):
        xp[n, :, r * stride:r * stride + kh, c * stride:c * stride + kw] = rows[n, r, c]
    return xp[:, :, pad:pad + H, pad:pad + W]


def col2im(fn):
    """fn(cols (N*OH*OW, C*KH*KW), x_shape, kh, kw, stride, pad) -> x (N, C, H, W):
    each row added back onto its window; overlaps add up."""
    rng = np.random.default_rng(5)
    cases = []
    for xs, (kh, kw), s, p in IM2COL_CASES:
        cols = rng.standard_normal(Fn.im2col(np.zeros(xs), kh, kw, s, p).shape)
        causes = [(None, _col2im_overwrite(cols, xs, kh, kw, s, p),
                   "overlapping windows must add up (+=), not overwrite each other (=)"),
                  (None, xs[:2] + (xs[2] + 2 * p, xs[3] + 2 * p), "the padding is still there: cut it off each side")]
        cases.append(_Case(f"cols {cols.shape}, x_shape {xs}, kh {kh}, kw {kw}, stride {s}, pad {p}",
                           (cols, xs, kh, kw, s, p), Fn.col2im(cols, xs, kh, kw, s, p), causes))
    return _run("col2im", fn, cases)


POOL_CASES = [((1, 1, 4, 4), 2, 2), ((2, 3, 4, 6), 2, 2), ((1, 2, 5, 5), 2, 2), ((2, 2, 6, 6), 3, 3),
              ((1, 2, 5, 5), 3, 2), ((1, 2, 5, 6), 2, 1)]


def maxpool_forward(fn):
    """fn(x (N, C, H, W), size, stride) -> out (N, C, OH, OW), OH = (H - size) // stride + 1."""
    rng = np.random.default_rng(6)
    cases = []
    for xs, size, s in POOL_CASES:
        x = rng.standard_normal(xs)
        ceil = tuple(xs[:2]) + tuple(-(-(n - size) // s) + 1 for n in xs[2:])
        causes = [(None, Fn.avgpool2d_forward_naive(x, size, s)[0], "that is average pooling: take the maximum"),
                  (None, Fn.maxpool2d_forward_naive(x, size, 1)[0].shape, "stride ignored: windows start every `stride` pixels"),
                  (None, ceil, "kept the incomplete windows at the border: drop them (round down)")]
        cases.append(_Case(f"x {xs}, size {size}, stride {s}", (x, size, s),
                           Fn.maxpool2d_forward_naive(x, size, s)[0], causes))
    return _run("maxpool_forward", fn, cases)


def _maxpool_backward_wrong(dout, x, size, stride, mode):
    """Typical wrong answers: the gradient to 'all' tied maxima, to the 'last' one,
    or 'assign'ed (=) where overlapping windows must add up."""
    dx = np.zeros_like(x)
    for n, c, r, q in np.ndindex(dout.shape):
        window = x[n, c, r * stride:r * stride + size, q * stride:q * stride + size]
        hits = np.argwhere(window == window.max())
        for i, j in hits[-1:] if mode == "last" else hits[:1] if mode == "assign" else hits:
            if mode == "assign":
                dx[n, c, r * stride + i, q * stride + j] = dout[n, c, r, q]
            else:
                dx[n, c, r * stride + i, q * stride + j] += dout[n, c, r, q]
    return dx


def maxpool_backward(fn):
    """fn(dout (N, C, OH, OW), x (N, C, H, W), size, stride) -> dx: each window's
    gradient goes to its first maximum (row by row); overlapping windows add up."""
    rng = np.random.default_rng(7)
    cases = []
    for k, (xs, size, s) in enumerate(POOL_CASES):
        # the first case without ties; then small integers, so windows tie; then one tie everywhere
        x = rng.standard_normal(xs) if k == 0 else np.ones(xs) if k == 2 else rng.integers(-2, 3, xs) * 1.0
        out, cache = Fn.maxpool2d_forward_naive(x, size, s)
        dout = rng.standard_normal(out.shape)
        causes = [(None, _maxpool_backward_wrong(dout, x, size, s, "all"), "gradient sent to every maximum of a "
                   "tied window: only the first maximum (row by row) gets it, as np.argmax picks"),
                  (None, _maxpool_backward_wrong(dout, x, size, s, "last"),
                   "gradient sent to the last maximum of a tied window: the first one gets it (np.argmax)"),
                  (None, _maxpool_backward_wrong(dout, x, size, s, "assign"),
                   "overlapping windows must add up (+=) where they share a maximum, not overwrite (=)"),
                  (None, Fn.avgpool2d_backward_naive(dout, (x, size, s)), "dout spread over the whole window: "
                   "that is average pooling; max-pooling sends it to the maximum only")]
        ties = "no ties" if k == 0 else "every window tied" if k == 2 else "with ties"
        cases.append(_Case(f"x {xs} {ties}, size {size}, stride {s}", (dout, x, size, s),
                           Fn.maxpool2d_backward_naive(dout, cache), causes))
    return _run("maxpool_backward", fn, cases)


def relu_backward(fn):
    """fn(dout, x) -> dx = dout where x > 0, else 0 (also at exactly 0)."""
    rng = np.random.default_rng(8)
    cases = []
    for shape in [(2, 3, 4, 4), (5, 7)]:
        x = rng.integers(-3, 4, shape) * rng.random(shape)   # about 1 in 7 exactly 0
        dout = rng.standard_normal(shape)
        causes = [(None, dout * (x >= 0), "at x == 0 the gradient is 0 here (cnnlib uses x > 0)"),
                  (None, dout * np.maximum(x, 0), "multiplied by relu(x): multiply by the mask x > 0"),
                  (None, (x > 0) * 1.0, "forgot dout: dx = dout * (x > 0)"),
                  (None, dout * (dout > 0), "the mask must come from x (the forward input), not from dout")]
        cases.append(_Case(f"x {shape} with zeros", (dout, x), dout * (x > 0), causes))
    return _run("relu_backward", fn, cases)


def softmax_cross_entropy(fn):
    """fn(logits (N, K), labels (N,) int) -> (mean loss, dlogits (N, K))."""
    rng = np.random.default_rng(9)
    cases = []
    for (n, k), shift in [((4, 3), 0.0), ((1, 5), 0.0), ((3, 4), 800.0)]:
        logits, labels = shift + 3 * rng.standard_normal((n, k)), rng.integers(0, k, n)
        loss_fn = SoftmaxCrossEntropy()
        loss = loss_fn.forward(logits, labels)
        d = loss_fn.backward()
        causes = [("loss", (n,), "one loss per sample: return their mean"),
                  ("loss", loss * n, "summed over the batch: the loss is the mean"),
                  ("loss", lambda g: not np.isfinite(g), "overflow: subtract each row's maximum before exp "
                                                          "(softmax does not change)"),
                  ("dlogits", d * n, "dlogits not divided by N: the loss is a mean over N samples"),
                  ("dlogits", loss_fn.probs / n, "forgot to subtract 1 at the true class (the one-hot labels)"),
                  ("dlogits", lambda g: not np.all(np.isfinite(g)), "overflow: subtract each row's maximum before exp")]
        label = f"logits {(n, k)}" + (f", large logits (about {shift:.0f}: exp overflows)" if shift else "")
        cases.append(_Case(label, (logits, labels), (loss, d), causes))
    return _run("softmax_cross_entropy", fn, cases, parts=("loss", "dlogits"))


def dense_backward(fn):
    """fn(dout (N, out), x (N, in), W (in, out)) -> (dx (N, in), dW (in, out), db (out,))."""
    rng = np.random.default_rng(10)
    cases = []
    for n, d_in, d_out in [(4, 3, 5), (1, 6, 2), (5, 4, 4)]:
        x, W, dout = rng.standard_normal((n, d_in)), rng.standard_normal((d_in, d_out)), rng.standard_normal((n, d_out))
        dW, db = x.T @ dout, dout.sum(axis=0)
        causes = [("dW", dW.T, "dW looks transposed: x.T @ dout has W's shape (in, out)"),
                  ("dW", dW / n, "dW divided by N: dout already carries the loss's 1/N"),
                  ("db", db / n, "db averaged: sum dout over the batch (axis 0)"),
                  ("db", (n, d_out), "db is summed over the batch (axis 0)")]
        cases.append(_Case(f"x {x.shape}, W {W.shape}", (dout, x, W), (dout @ W.T, dW, db), causes))
    return _run("dense_backward", fn, cases, parts=("dx", "dW", "db"))


def numerical_gradient(fn):
    """fn(f, x) -> dF/dx by central differences, where f() (no arguments) reads x,
    which fn nudges in place; x must hold its old values afterwards."""
    name = "numerical_gradient"
    if not callable(fn):
        return _run(name, fn, [])
    rng = np.random.default_rng(11)
    x1, c2, x3 = 1e-3 * rng.standard_normal(5), rng.standard_normal((3, 4)), rng.standard_normal((2, 3, 2))
    x2 = rng.standard_normal((3, 4))
    cases = [("f() = sum(x ** 2), x (5,) close to 0", x1, lambda: np.sum(x1 ** 2), 2 * x1),
             ("f() = sum(c * sin(x)), x (3, 4)", x2, lambda: np.sum(c2 * np.sin(x2)), c2 * np.cos(x2)),
             ("f() = sum(x ** 3), x (2, 3, 2)", x3, lambda: np.sum(x3 ** 3), 3 * x3 ** 2)]
    for k, (label, x, f, exact) in enumerate(cases, 1):
        where = f"case {k} of {len(cases)} ({label})"
        before = x.copy()
        try:
            with _Quiet():
                got = fn(f, x)
        except Exception as exc:
            hint = ["f takes no arguments: it reads x, which your function changes in place"] \
                if isinstance(exc, TypeError) and "argument" in str(exc) else []
            return _say(name, False, [f"your function raised {_exc(exc)}, in {where}"] + hint)
        if not np.array_equal(x, before):
            return _say(name, False, [f"x was changed in {where}",
                                      "put each entry back after nudging it (x[i] = old)"])
        causes = [(None, lambda g, e=exact: not g.any(), "all zeros: f() reads x itself, so nudge x in place, "
                   "not a copy of it"),
                  (None, lambda g, e=exact: (g == 0).any() and not (e == 0).any(),
                   "some entries are 0: nudge every element of x (loop over x.size, e.g. through x.reshape(-1))"),
                  (None, 2 * exact, "twice the gradient: divide by 2 h, not h"),
                  (None, exact / 2, "half the gradient: divide by 2 h, not 4 h"),
                  (None, lambda g, e=exact: 1e-7 < relative_error(g, e) < 1e-2,
                   "close, but not to rounding: use the central difference (f(x + h) - f(x - h)) / (2 h) with h "
                   "about 1e-6; a forward difference is only accurate to O(h)")]
        problem = _problem(got, _Case(label, (), exact, causes), None, False)
        if problem is None and relative_error(np.asarray(got, dtype=np.float64), exact) > 1e-7:
            problem = ["not accurate enough", f"relative error {relative_error(got, exact):.1e}, expected < 1e-7"] \
                + _likely(np.asarray(got, dtype=np.float64), exact, [(t, m) for _, t, m in causes], [])
        if problem:
            return _say(name, False, [f"{problem[0]} in {where}"] + problem[1:])
    return _say(name, True, [f"all {len(cases)} cases correct"])


def compare(answer, expected, name="answer"):
    """For exercises without a check of their own: compare ``answer`` with the
    ``expected`` array (or tuple of arrays). ``answer`` may be a function of no
    arguments, e.g. ``lambda: my_avgpool(x, 2)``, so an exception in it is
    reported like any other verdict."""
    fn = answer if callable(answer) else (lambda: answer)
    parts = tuple(f"part {i}" for i in range(len(expected))) if isinstance(expected, tuple) else None
    return _run(name, fn, [_Case("your answer", (), expected)], parts=parts)


def gradients(analytic, numeric, name="gradient"):
    """Print the relative error of an analytic (backprop) and a numerical gradient
    and what its size means (float64): < 1e-7 right; up to 1e-4 probably right
    (kinks: ReLU at 0, ties in a max); up to 1e-2 suspicious; above, wrong.
    Returns True for right or probably right."""
    if analytic is None or numeric is None:
        return _say(name, False, ["a gradient is None: does the backward function return its result?"])
    try:
        a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        return _say(name, False, [f"cannot compare: {_exc(exc)}"])
    if a.shape != n.shape:
        return _say(name, False, [f"shapes differ: analytic {a.shape}, numeric {n.shape}"]
                    + _likely(a, n, [], _SHAPE_HINTS))
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(n))):
        return _say(name, False, ["NaN or inf in a gradient: an overflow, or a division by zero"])
    err = relative_error(a, n)
    if err < 1e-7:
        return _say(name, True, [f"relative error {err:.1e}: right (the two agree to rounding)"])
    if err < 1e-4:
        return _say(name, True, [f"relative error {err:.1e}: probably right; expected near kinks "
                                 "(ReLU at 0, ties in a max)"])
    lines = [f"relative error {err:.1e}: " + ("suspicious, look closer" if err < 1e-2 else "wrong")]
    idx = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(a - n)), a.shape))
    lines.append(f"largest difference at index {idx}: analytic {a[idx]:.6g}, numeric {n[idx]:.6g}")
    with _Quiet():                       # hints divide by the numeric gradient, which may be all zeros
        lines += _likely(a, n, [], _VALUE_HINTS)
    if any(getattr(v, "dtype", None) == np.float32 for v in (analytic, numeric)):
        lines.append("note: float32 rounding alone gives errors this large; check in float64")
    return _say(name, False, lines)
