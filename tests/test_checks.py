"""cnnlib.checks: each self-check accepts correct answers (written the way a
student would, not copied from cnnlib) and names the typical mistakes.

Every test asserts the verdict twice: the return value and the key words of
the printed message. No check may raise, whatever the student's function does.
"""
import time

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

from cnnlib import checks, gradcheck
from cnnlib import functional as Fn


def verdict(capsys, check, fn):
    ok = check(fn)
    out = capsys.readouterr().out
    assert out.startswith(check.__name__ + ": "), out
    return ok, out


def passes(capsys, check, fn):
    ok, out = verdict(capsys, check, fn)
    assert ok is True, out
    assert "cases correct" in out and out.count("\n") == 1, out


def fails(capsys, check, fn, *words):
    ok, out = verdict(capsys, check, fn)
    assert ok is False, out
    for word in words:
        assert word in out, f"{word!r} not in:\n{out}"
    return out


# ------------------------------------------- correct answers, student style ---
def out_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def correlate_loops(image, kernel):
    KH, KW = kernel.shape
    out = np.zeros((image.shape[0] - KH + 1, image.shape[1] - KW + 1))
    for r in range(out.shape[0]):
        for c in range(out.shape[1]):
            out[r, c] = np.sum(image[r:r + KH, c:c + KW] * kernel)
    return out


def windows(x, kh, kw, stride, pad):
    """(N, C, OH, OW, KH, KW) view of every window."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    return sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]


def conv_einsum(x, w, b, stride, pad):
    return np.einsum("nchwij,fcij->nfhw", windows(x, *w.shape[2:], stride, pad), w) + b[:, None, None]


def conv_backward_loops(dout, x, w, stride, pad):
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    KH, KW = w.shape[2:]
    for n, f, r, c in np.ndindex(dout.shape):
        rows, cols = slice(r * stride, r * stride + KH), slice(c * stride, c * stride + KW)
        dxp[n, :, rows, cols] += dout[n, f, r, c] * w[f]
        dw[f] += dout[n, f, r, c] * xp[n, :, rows, cols]
    H, W = x.shape[2:]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, dout.sum(axis=(0, 2, 3))


def im2col_loops(x, kh, kw, stride, pad):
    win = windows(x, kh, kw, stride, pad)             # (N, C, OH, OW, KH, KW)
    N, C, OH, OW = win.shape[:4]
    return np.array([win[n, :, r, c].ravel() for n in range(N) for r in range(OH) for c in range(OW)])


def col2im_loops(cols, x_shape, kh, kw, stride, pad):
    N, C, H, W = x_shape
    OH, OW = out_size(H, kh, stride, pad), out_size(W, kw, stride, pad)
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    for i, (n, r, c) in enumerate(np.ndindex(N, OH, OW)):
        xp[n, :, r * stride:r * stride + kh, c * stride:c * stride + kw] += cols[i].reshape(C, kh, kw)
    return xp[:, :, pad:pad + H, pad:pad + W]


def maxpool_views(x, size, stride):
    return windows(x, size, size, stride, 0).max(axis=(4, 5))


def maxpool_backward_argmax(dout, x, size, stride):
    dx = np.zeros_like(x)
    for n, ch, r, c in np.ndindex(dout.shape):
        window = x[n, ch, r * stride:r * stride + size, c * stride:c * stride + size]
        i, j = np.unravel_index(np.argmax(window), window.shape)
        dx[n, ch, r * stride + i, c * stride + j] += dout[n, ch, r, c]
    return dx


def softmax_ce(logits, labels):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(logits)
    loss = -np.mean(np.log(p[np.arange(n), labels]))
    d = p.copy()
    d[np.arange(n), labels] -= 1
    return loss, d / n


def dense_backward(dout, x, W):
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


def central_differences(f, x, h=1e-6):
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f()
        x[i] = old - h
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


CORRECT = [
    (checks.output_size, out_size),
    (checks.output_size, Fn.conv_output_size),
    (checks.correlate2d, correlate_loops),
    (checks.correlate2d, lambda image, kernel: signal.correlate2d(image, kernel, "valid")),
    (checks.conv_forward, conv_einsum),
    (checks.conv_forward, lambda x, w, b, s, p: Fn.conv2d_forward_im2col(x, w, b, s, p)[0]),
    (checks.conv_backward, conv_backward_loops),
    (checks.im2col, im2col_loops),
    (checks.im2col, Fn.im2col),
    (checks.col2im, col2im_loops),
    (checks.maxpool_forward, maxpool_views),
    (checks.maxpool_backward, maxpool_backward_argmax),
    (checks.relu_backward, lambda dout, x: dout * (x > 0)),
    (checks.relu_backward, lambda dout, x: np.where(x > 0, dout, 0.0).astype(np.float32)),   # float32 is fine
    (checks.softmax_cross_entropy, softmax_ce),
    (checks.dense_backward, dense_backward),
    (checks.numerical_gradient, central_differences),
    (checks.numerical_gradient, gradcheck.numerical_gradient),
]


@pytest.mark.parametrize("check, fn", CORRECT, ids=lambda v: getattr(v, "__name__", "fn"))
def test_a_correct_answer_passes_quickly(capsys, check, fn):
    start = time.perf_counter()
    passes(capsys, check, fn)
    assert time.perf_counter() - start < 2.0     # about 0.05 s; loose: the machine is shared


# ------------------------------------------------------------ wrong answers ---
def test_output_size_mistakes(capsys):
    fails(capsys, checks.output_size, lambda s, k, st, p: (s + 2 * p - k) // st, "expected 24, got 23", "forgot the + 1")
    fails(capsys, checks.output_size, lambda s, k, st, p: (s + p - k) // st + 1, "case 2 of 6", "pad counted once")
    fails(capsys, checks.output_size, lambda s, k, st, p: s + 2 * p - k + 1, "stride ignored")
    fails(capsys, checks.output_size, lambda s, k, st, p: -(-(s + 2 * p - k) // st) + 1, "rounded up")
    fails(capsys, checks.output_size, lambda s, k, st, p: (s + 2 * p - k) / st + 1,
          "wrong type", "expected an int, got 24.0", "//")
    fails(capsys, checks.output_size, lambda s, k, st, p: np.float64(24), "wrong type", "float64")


def test_correlate2d_mistakes(capsys):
    fails(capsys, checks.correlate2d, lambda im, k: signal.convolve2d(im, k, "valid"),
          "wrong values", "at index (0, 0)", "flipped kernel: you computed a convolution, not a cross-correlation")
    fails(capsys, checks.correlate2d, lambda im, k: signal.correlate2d(im, k, "same"),
          "wrong shape", "expected (3, 3), got (4, 4)", "'same'")
    fails(capsys, checks.correlate2d, lambda im, k: signal.correlate2d(im, k, "full"), "'full'")
    fails(capsys, checks.correlate2d, lambda im, k: correlate_loops(im, k).T, "looks transposed")
    fails(capsys, checks.correlate2d, lambda im, k: correlate_loops(im, k)[:-1], "wrong shape", "off by one")


def test_conv_forward_mistakes(capsys):
    fails(capsys, checks.conv_forward, lambda x, w, b, s, p: conv_einsum(x, w, 0 * b, s, p),
          "wrong values", "expected", "got", "missing bias")
    fails(capsys, checks.conv_forward, lambda x, w, b, s, p: conv_einsum(x, w[:, :, ::-1, ::-1], b, s, p),
          "flipped kernel: you computed a convolution, not a cross-correlation")
    fails(capsys, checks.conv_forward, lambda x, w, b, s, p: conv_einsum(x, w, b, s, p).transpose(0, 2, 3, 1),
          "wrong shape", "channels last")
    fails(capsys, checks.conv_forward, lambda x, w, b, s, p: conv_einsum(x, w, b, s, 0),
          "case 3 of 5", "expected (2, 4, 5, 5), got (2, 4, 3, 3)", "padding ignored")
    fails(capsys, checks.conv_forward, lambda x, w, b, s, p: conv_einsum(x, w, b, 1, p), "case 4 of 5", "stride ignored")
    fails(capsys, checks.conv_forward, lambda x, w, b, s, p: conv_einsum(x, w, b, s, p)[:, :, 1:],
          "wrong shape", "off by one")
    # cnnlib's tiers return (out, cache): not what this check asks for
    fails(capsys, checks.conv_forward, Fn.conv2d_forward_naive, "wrong type", "tuple")


def test_conv_backward_mistakes(capsys):
    def with_db(db_fn):
        return lambda dout, x, w, s, p: conv_backward_loops(dout, x, w, s, p)[:2] + (db_fn(dout),)

    fails(capsys, checks.conv_backward, with_db(lambda d: d.sum(axis=(2, 3))),
          "wrong shape of db", "expected (1,), got (1, 1)", "summed over the batch")
    fails(capsys, checks.conv_backward, with_db(lambda d: d.mean(axis=(0, 2, 3))), "wrong values of db", "db averaged")

    def padded_dx(dout, x, w, s, p):
        dx, dw, db = conv_backward_loops(dout, x, w, s, p)
        return np.pad(dx, ((0, 0), (0, 0), (p, p), (p, p))), dw, db
    fails(capsys, checks.conv_backward, padded_dx, "wrong shape of dx", "case 3 of 5", "padding")

    def flipped_dx(dout, x, w, s, p):
        return conv_backward_loops(dout, x, w[:, :, ::-1, ::-1], s, p)[0], *conv_backward_loops(dout, x, w, s, p)[1:]
    fails(capsys, checks.conv_backward, flipped_dx, "wrong values of dx", "flipped kernel")

    def dw_mean(dout, x, w, s, p):
        dx, dw, db = conv_backward_loops(dout, x, w, s, p)
        return dx, dw / len(x), db
    fails(capsys, checks.conv_backward, dw_mean, "wrong values of dw", "case 2 of 5", "divided by the batch size")
    fails(capsys, checks.conv_backward, lambda dout, x, w, s, p: conv_backward_loops(dout, x, w, s, p)[:2],
          "wrong type", "expected a tuple (dx, dw, db), got tuple of length 2")


def test_im2col_mistakes(capsys):
    def reorder(*axes):
        def wrong(x, kh, kw, s, p):
            cols = im2col_loops(x, kh, kw, s, p)
            N, C = x.shape[:2]
            OH, OW = out_size(x.shape[2], kh, s, p), out_size(x.shape[3], kw, s, p)
            return cols.reshape(N, OH, OW, C, kh, kw).transpose(*axes).reshape(cols.shape)
        return wrong

    fails(capsys, checks.im2col, lambda *a: im2col_loops(*a).T, "expected (9, 4), got (4, 9)", "looks transposed")
    fails(capsys, checks.im2col, reorder(0, 1, 2, 4, 5, 3), "wrong values", "case 2 of 5", "(i, j, c) order")
    fails(capsys, checks.im2col, reorder(1, 2, 0, 3, 4, 5), "rows ordered batch last")
    fails(capsys, checks.im2col, reorder(0, 2, 1, 3, 4, 5), "column by column")
    fails(capsys, checks.im2col, lambda x, kh, kw, s, p: im2col_loops(x, kh, kw, 1, p), "stride ignored")
    fails(capsys, checks.im2col, lambda x, kh, kw, s, p: im2col_loops(x, kh, kw, s, 0), "padding ignored")


def test_col2im_mistakes(capsys):
    def overwrite(cols, x_shape, kh, kw, s, p):
        N, C, H, W = x_shape
        OH, OW = out_size(H, kh, s, p), out_size(W, kw, s, p)
        xp = np.zeros((N, C, H + 2 * p, W + 2 * p))
        for i, (n, r, c) in enumerate(np.ndindex(N, OH, OW)):
            xp[n, :, r * s:r * s + kh, c * s:c * s + kw] = cols[i].reshape(C, kh, kw)
        return xp[:, :, p:p + H, p:p + W]

    def uncropped(cols, x_shape, kh, kw, s, p):
        N, C, H, W = x_shape
        return np.pad(col2im_loops(cols, x_shape, kh, kw, s, p), ((0, 0), (0, 0), (p, p), (p, p)))

    fails(capsys, checks.col2im, overwrite, "wrong values", "case 1 of 5", "add up (+=)")
    fails(capsys, checks.col2im, uncropped, "wrong shape", "padding is still there")


def test_maxpool_forward_mistakes(capsys):
    fails(capsys, checks.maxpool_forward, lambda x, size, s: windows(x, size, size, s, 0).mean(axis=(4, 5)),
          "wrong values", "average pooling")
    fails(capsys, checks.maxpool_forward, lambda x, size, s: maxpool_views(x, size, 1), "stride ignored")
    fails(capsys, checks.maxpool_forward, lambda x, size, s: maxpool_views(np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)),
                                                                               constant_values=-np.inf), size, s),
          "case 3 of 6", "incomplete windows")
    fails(capsys, checks.maxpool_forward, lambda x, size, s: maxpool_views(x, size, s).transpose(0, 1, 3, 2),
          "looks transposed")


def test_maxpool_backward_mistakes(capsys):
    def to_maxima(pick, add=True):
        def wrong(dout, x, size, stride):
            dx = np.zeros_like(x)
            for n, ch, r, c in np.ndindex(dout.shape):
                window = x[n, ch, r * stride:r * stride + size, c * stride:c * stride + size]
                for i, j in pick(np.argwhere(window == window.max())):
                    if add:
                        dx[n, ch, r * stride + i, c * stride + j] += dout[n, ch, r, c]
                    else:
                        dx[n, ch, r * stride + i, c * stride + j] = dout[n, ch, r, c]
            return dx
        return wrong

    fails(capsys, checks.maxpool_backward, to_maxima(lambda hits: hits),
          "wrong values", "case 2 of 6", "with ties", "gradient sent to every maximum of a tied window")
    fails(capsys, checks.maxpool_backward, to_maxima(lambda hits: hits[-1:]), "the last maximum")
    fails(capsys, checks.maxpool_backward, to_maxima(lambda hits: hits[:1], add=False),
          "case 5 of 6", "add up (+=)")

    def spread(dout, x, size, stride):
        return Fn.avgpool2d_backward_naive(dout, (x, size, stride))
    fails(capsys, checks.maxpool_backward, spread, "average pooling")


def test_relu_backward_mistakes(capsys):
    fails(capsys, checks.relu_backward, lambda dout, x: dout * (x >= 0), "expected 0, got", "x == 0")
    fails(capsys, checks.relu_backward, lambda dout, x: dout * np.maximum(x, 0), "multiplied by relu(x)")
    fails(capsys, checks.relu_backward, lambda dout, x: (x > 0) * 1.0, "forgot dout")
    fails(capsys, checks.relu_backward, lambda dout, x: np.maximum(dout, 0), "must come from x")


def test_softmax_cross_entropy_mistakes(capsys):
    def unstable(logits, labels):
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        n = len(logits)
        d = p.copy()
        d[np.arange(n), labels] -= 1
        return -np.mean(np.log(p[np.arange(n), labels])), d / n

    def scaled(loss_factor=1.0, grad_factor=1.0):
        def wrong(logits, labels):
            loss, d = softmax_ce(logits, labels)
            return loss * (len(logits) if loss_factor else 1), d * (len(logits) if grad_factor else 1)
        return wrong

    out = fails(capsys, checks.softmax_cross_entropy, unstable, "wrong values of loss", "case 3 of 3", "overflow")
    assert "Warning" not in out                          # numpy's overflow warnings are silenced
    fails(capsys, checks.softmax_cross_entropy, scaled(1, 0), "wrong values of loss", "the loss is the mean")
    fails(capsys, checks.softmax_cross_entropy, scaled(0, 1), "wrong values of dlogits", "not divided by N")

    def no_onehot(logits, labels):
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        return softmax_ce(logits, labels)[0], z / z.sum(axis=1, keepdims=True) / len(z)
    fails(capsys, checks.softmax_cross_entropy, no_onehot, "subtract 1 at the true class")

    def per_sample(logits, labels):
        loss, d = softmax_ce(logits, labels)
        return np.full(len(logits), loss), d
    fails(capsys, checks.softmax_cross_entropy, per_sample, "wrong shape of loss", "one loss per sample")
    fails(capsys, checks.softmax_cross_entropy, lambda z, y: (softmax_ce(z, y)[0], -softmax_ce(z, y)[1]), "sign is flipped")


def test_dense_backward_mistakes(capsys):
    fails(capsys, checks.dense_backward, lambda dout, x, W: (dout @ W.T, dout.T @ x, dout.sum(axis=0)),
          "wrong shape of dW", "expected (3, 5), got (5, 3)", "dW looks transposed")
    fails(capsys, checks.dense_backward, lambda dout, x, W: (dout @ W.T, x.T @ dout, dout.mean(axis=0)),
          "wrong values of db", "db averaged")
    fails(capsys, checks.dense_backward, lambda dout, x, W: (W @ dout.T, x.T @ dout, dout.sum(axis=0)),
          "wrong shape of dx", "expected (4, 3), got (3, 4)", "looks transposed")
    fails(capsys, checks.dense_backward, lambda dout, x, W: (dout @ W, x.T @ dout, dout.sum(axis=0)),
          "raised ValueError", "matmul")


def test_numerical_gradient_mistakes(capsys):
    def forward_difference(f, x, h=1e-6):
        grad = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            old, base = x[i], f()
            x[i] = old + h
            grad[i] = (f() - base) / h
            x[i] = old
        return grad

    def on_a_copy(f, x, h=1e-6):
        grad, x = np.zeros_like(x), x.copy()        # f() still reads the original x
        for i in np.ndindex(x.shape):
            old = x[i]
            x[i] = old + h
            up = f()
            x[i] = old - h
            grad[i] = (up - f()) / (2 * h)
            x[i] = old
        return grad

    def first_axis_only(f, x, h=1e-6):
        grad = np.zeros_like(x)
        flat, gflat = x.reshape(-1), grad.reshape(-1)
        for i in range(len(x)):                     # len(x) is x.shape[0], not x.size
            old = flat[i]
            flat[i] = old + h
            up = f()
            flat[i] = old - h
            gflat[i] = (up - f()) / (2 * h)
            flat[i] = old
        return grad

    def not_restored(f, x, h=1e-6):
        grad = central_differences(f, x, h)
        x += h
        return grad

    fails(capsys, checks.numerical_gradient, forward_difference, "case 1 of 3", "central difference")
    fails(capsys, checks.numerical_gradient, lambda f, x: 2 * central_differences(f, x), "divide by 2 h")
    fails(capsys, checks.numerical_gradient, lambda f, x: f(x), "raised TypeError", "f takes no arguments")
    fails(capsys, checks.numerical_gradient, on_a_copy, "all zeros", "in place")
    fails(capsys, checks.numerical_gradient, first_axis_only, "case 2 of 3", "some entries are 0")
    fails(capsys, checks.numerical_gradient, not_restored, "x was changed")


# ---------------------------------------------- anything else never raises ---
ALL_CHECKS = [checks.output_size, checks.correlate2d, checks.conv_forward, checks.conv_backward, checks.im2col,
              checks.col2im, checks.maxpool_forward, checks.maxpool_backward, checks.relu_backward,
              checks.softmax_cross_entropy, checks.dense_backward, checks.numerical_gradient]


def raises(*args):
    raise ValueError("operands could not be broadcast together\nwith shapes (2,3) (3,2)")


def stub(*args):
    ...                                            # an untouched your-turn cell


NONSENSE = {
    "raises": (raises, "your function raised ValueError: operands could not be broadcast together, in case 1"),
    "returns None": (stub, "returned None"),
    "wrong shape": (lambda *args: np.zeros((2, 2)), "wrong"),
    "a string": (lambda *args: "done", "wrong"),
    "a dict": (lambda *args: {"out": 1}, "wrong"),
    "ragged list": (lambda *args: [[1.0, 2.0], [3.0]], "wrong"),
    "NaN": (lambda *args: np.full((2, 2), np.nan), "wrong"),
    "a list of None": (lambda *args: [None, None, None], ""),
    "not a function": (42, "expected a function, got int"),
}


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("what", NONSENSE)
def test_a_check_never_raises(capsys, check, what):
    fn, words = NONSENSE[what]
    out = fails(capsys, check, fn, words)
    assert "Traceback" not in out
    if what == "raises":
        assert out.count("\n") == 1, "an exception is reported in one line"


def test_arguments_are_copies(capsys):
    """A function that changes its input in place does not spoil the next case."""
    def destructive(x, kh, kw, s, p):
        cols = im2col_loops(x, kh, kw, s, p)
        x[...] = 0
        return cols
    passes(capsys, checks.im2col, destructive)


def test_a_verdict_is_short_and_shows_no_reference_code(capsys):
    out = fails(capsys, checks.conv_forward, lambda x, w, b, s, p: conv_einsum(x, w, 0 * b, s, p))
    assert "def " not in out and "conv2d_forward_naive" not in out and len(out.splitlines()) == 3


# ------------------------------------------------------------------ gradients ---
def test_gradients_verdicts(capsys):
    g = np.random.default_rng(0).standard_normal((3, 4))
    assert checks.gradients(g, g * (1 + 1e-12)) is True
    assert "right" in capsys.readouterr().out
    assert checks.gradients(g, g + 1e-6) is True
    assert "probably right" in capsys.readouterr().out
    assert checks.gradients(g, g + 1e-3) is False
    assert "suspicious" in capsys.readouterr().out
    assert checks.gradients(g, 2 * g, "dW") is False
    out = capsys.readouterr().out
    assert out.startswith("dW: relative error 3.3e-01: wrong")
    assert "largest difference at index" in out and "constant factor" in out
    assert checks.gradients(g, -g) is False
    assert "sign is flipped" in capsys.readouterr().out
    assert checks.gradients(g, g.T) is False
    assert "shapes differ" in capsys.readouterr().out
    assert checks.gradients(g.astype(np.float32), 1.01 * g) is False
    assert "float32" in capsys.readouterr().out
    assert checks.gradients(g, np.full_like(g, np.nan)) is False
    assert "NaN" in capsys.readouterr().out
    assert checks.gradients(None, g) is False
    assert "None" in capsys.readouterr().out


# -------------------------------------------------------------------- compare ---
def test_compare_for_exercises_without_a_check_of_their_own(capsys):
    e = np.arange(6.0).reshape(2, 3)
    assert checks.compare(e.copy(), e, "avgpool_views") is True
    assert capsys.readouterr().out == "avgpool_views: correct\n"
    assert checks.compare(lambda: e.T, e, "avgpool_views") is False
    assert capsys.readouterr().out.splitlines() == ["avgpool_views: wrong shape", "  expected (2, 3), got (3, 2)",
                                                    "  likely cause: looks transposed"]
    assert checks.compare(lambda: 1 / 0, e) is False
    assert capsys.readouterr().out == "answer: your function raised ZeroDivisionError: division by zero\n"
    assert checks.compare((e, e), (e, e + 1), "pair") is False
    assert "wrong values of part 1" in capsys.readouterr().out


def test_gradients_of_an_all_zero_numeric_gradient_warn_nothing(capsys):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checks.gradients(np.ones(3), np.zeros(3)) is False
    assert "wrong" in capsys.readouterr().out
