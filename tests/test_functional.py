"""Convolution and pooling: naive loops vs classic im2col vs the fast path vs SciPy."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import signal

from cnnlib import functional as F


@st.composite
def conv_case(draw):
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    pad, stride = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    kh = draw(st.integers(1, h + 2 * pad))
    kw = draw(st.integers(1, w + 2 * pad))
    seed = draw(st.integers(0, 2**16))
    return n, c, f, h, w, kh, kw, stride, pad, seed


def scipy_conv(x, w, b, stride, pad):
    """Cross-correlation per (sample, filter) with SciPy, then subsample by stride."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = []
    for n in range(x.shape[0]):
        maps = [sum(signal.correlate(xp[n, c], w[f, c], mode="valid") for c in range(x.shape[1])) + b[f]
                for f in range(w.shape[0])]
        out.append(np.stack(maps)[:, ::stride, ::stride])
    return np.stack(out)


@settings(max_examples=60, deadline=None)
@given(conv_case())
def test_conv_three_ways_and_scipy_agree(case):
    n, c, f, h, w, kh, kw, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((f, c, kh, kw))
    b = rng.standard_normal(f)
    ref = F.conv2d_naive(x, wt, b, stride, pad)
    assert ref.shape == (n, f, (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1)
    np.testing.assert_allclose(scipy_conv(x, wt, b, stride, pad), ref, rtol=1e-10, atol=1e-10)
    out_i, cache_i = F.conv2d_im2col(x, wt, b, stride, pad)
    out_f, cache_f = F.conv2d_forward(x, wt, b, stride, pad)
    np.testing.assert_allclose(out_i, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out_f, ref, rtol=1e-10, atol=1e-10)

    dout = rng.standard_normal(ref.shape)
    ref_grads = F.conv2d_backward_naive(dout, x, wt, stride, pad)
    for grads in (F.conv2d_backward_im2col(dout, cache_i), F.conv2d_backward(dout, cache_f)):
        for name, g, r in zip(("dx", "dw", "db"), grads, ref_grads):
            assert g.shape == r.shape, name
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10, err_msg=name)


@st.composite
def pool_case(draw):
    size, stride = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    h, w = draw(st.integers(size, 10)), draw(st.integers(size, 10))
    ties = draw(st.booleans())
    return draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w, size, stride, ties, draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(pool_case())
def test_maxpool_three_ways_agree_including_ties_and_overlap(case):
    n, c, h, w, size, stride, ties, seed = case
    rng = np.random.default_rng(seed)
    # integer-valued inputs make ties common: the gradient must go to the first max only
    x = rng.integers(0, 3, (n, c, h, w)).astype(float) if ties else rng.standard_normal((n, c, h, w))
    ref = F.maxpool2d_naive(x, size, stride)
    out_i, cache_i = F.maxpool2d_im2col(x, size, stride)
    out_f, cache_f = F.maxpool2d_forward(x, size, stride)
    np.testing.assert_array_equal(out_i, ref)
    np.testing.assert_array_equal(out_f, ref)
    dout = rng.standard_normal(ref.shape)
    dref = F.maxpool2d_backward_naive(dout, x, size, stride)
    np.testing.assert_allclose(F.maxpool2d_backward_im2col(dout, cache_i), dref, atol=1e-12)
    np.testing.assert_allclose(F.maxpool2d_backward(dout, cache_f), dref, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(pool_case())
def test_avgpool_matches_loops_and_its_gradient_is_the_adjoint(case):
    n, c, h, w, size, stride, _, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    out, cache = F.avgpool2d_forward(x, size, stride)
    np.testing.assert_allclose(out, F.avgpool2d_naive(x, size, stride), atol=1e-12)
    y = rng.standard_normal(out.shape)
    # avg-pool is linear, so its backward is its adjoint: <A x, y> == <x, A^T y>
    np.testing.assert_allclose(np.sum(out * y), np.sum(x * F.avgpool2d_backward(y, cache)))


@settings(max_examples=40, deadline=None)
@given(conv_case())
def test_col2im_is_the_adjoint_of_im2col(case):
    n, c, _, h, w, kh, kw, stride, pad, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    cols = F.im2col(x, kh, kw, stride, pad)
    y = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(np.sum(cols * y), np.sum(x * F.col2im(y, x.shape, kh, kw, stride, pad)))


def test_im2col_rows_are_windows():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    cols = F.im2col(x, 2, 2, stride=2)
    np.testing.assert_array_equal(cols, [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]])


@pytest.mark.parametrize("size,kernel,stride,pad,expected", [
    (28, 5, 1, 0, 24), (28, 3, 1, 1, 28), (7, 3, 2, 0, 3), (4, 2, 2, 1, 3), (5, 5, 1, 0, 1), (224, 11, 4, 2, 55)])
def test_conv_output_size(size, kernel, stride, pad, expected):
    assert F.conv_output_size(size, kernel, stride, pad) == expected


@pytest.mark.parametrize("impl", ["fast", "im2col"])
def test_float32_stays_float32(impl):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    fwd, bwd = ((F.conv2d_forward, F.conv2d_backward) if impl == "fast"
                else (F.conv2d_im2col, F.conv2d_backward_im2col))
    out, cache = fwd(x, w, b, 1, 1)
    grads = bwd(np.ones_like(out), cache)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    pool_fwd, pool_bwd = ((F.maxpool2d_forward, F.maxpool2d_backward) if impl == "fast"
                          else (F.maxpool2d_im2col, F.maxpool2d_backward_im2col))
    p, pc = pool_fwd(out)
    assert p.dtype == np.float32 and pool_bwd(np.ones_like(p), pc).dtype == np.float32
    if impl == "fast":
        fused, fc = F.conv2d_maxpool2d_forward(x, w, b, 1, 1, 2, relu=True)
        assert fused.dtype == np.float32
        assert all(g.dtype == np.float32 for g in F.conv2d_maxpool2d_backward(np.ones_like(fused), fc))


@st.composite
def conv_pool_case(draw):
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    size, stride, pad = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(0, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    # the conv output must hold at least one pooling window
    h = draw(st.integers(max(1, kh + (size - 1) * stride - 2 * pad), 11))
    w = draw(st.integers(max(1, kw + (size - 1) * stride - 2 * pad), 11))
    return (n, c, f, h, w, kh, kw, stride, pad, size, draw(st.booleans()), draw(st.booleans()),
            draw(st.integers(0, 2**16)))


@settings(max_examples=80, deadline=None)
@given(conv_pool_case())
def test_fused_conv_relu_pool_equals_the_layers_one_by_one(case):
    n, c, f, h, w, kh, kw, stride, pad, size, relu, ties, seed = case
    rng = np.random.default_rng(seed)
    if ties:   # small integers: many equal conv outputs, and many <= 0 for the ReLU
        x = rng.integers(-1, 2, (n, c, h, w)).astype(float)
        wt = rng.integers(-1, 2, (f, c, kh, kw)).astype(float)
        b = rng.integers(-1, 2, f).astype(float)
    else:
        x, wt, b = rng.standard_normal((n, c, h, w)), rng.standard_normal((f, c, kh, kw)), rng.standard_normal(f)
    conv = F.conv2d_naive(x, wt, b, stride, pad)
    act = np.maximum(conv, 0) if relu else conv
    ref = F.maxpool2d_naive(act, size)
    out, cache = F.conv2d_maxpool2d_forward(x, wt, b, stride, pad, size, relu=relu)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    inference, none = F.conv2d_maxpool2d_forward(x, wt, b, stride, pad, size, relu=relu, keep_cache=False)
    np.testing.assert_array_equal(inference, out)
    assert none is None

    dout = rng.standard_normal(ref.shape)
    dact = F.maxpool2d_backward_naive(dout, act, size)
    dconv = dact * (conv > 0) if relu else dact
    ref_grads = F.conv2d_backward_naive(dconv, x, wt, stride, pad)
    grads = F.conv2d_maxpool2d_backward(dout, cache)
    for name, g, r in zip(("dx", "dw", "db"), grads, ref_grads):
        assert g.shape == r.shape, name
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10, err_msg=name)
    assert F.conv2d_maxpool2d_backward(dout, cache, need_dx=False)[0] is None


@pytest.mark.parametrize("layout", ["standard", "batch-last"])
def test_fast_path_accepts_either_memory_layout(layout):
    """The fast path's outputs are batch-last views; inputs and gradients in
    plain (N, C, H, W) order must give the same numbers."""
    rng = np.random.default_rng(0)

    def arrange(a):
        return np.ascontiguousarray(a) if layout == "standard" else \
            np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    x, wt, b = rng.standard_normal((3, 2, 9, 8)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    ref = F.conv2d_naive(x, wt, b, 2, 1)
    out, cache = F.conv2d_forward(arrange(x), wt, b, 2, 1)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    dout = rng.standard_normal(ref.shape)
    for g, r in zip(F.conv2d_backward(arrange(dout), cache), F.conv2d_backward_naive(dout, x, wt, 2, 1)):
        np.testing.assert_allclose(g, r, atol=1e-12)
    p, pcache = F.maxpool2d_forward(arrange(x), 3, 2)
    np.testing.assert_array_equal(p, F.maxpool2d_naive(x, 3, 2))
    dp = rng.standard_normal(p.shape)
    np.testing.assert_allclose(F.maxpool2d_backward(arrange(dp), pcache),
                               F.maxpool2d_backward_naive(dp, x, 3, 2), atol=1e-12)
    fused, fcache = F.conv2d_maxpool2d_forward(arrange(x), wt, b, 1, 1, 2, relu=True)
    np.testing.assert_allclose(fused, F.maxpool2d_naive(np.maximum(F.conv2d_naive(x, wt, b, 1, 1), 0), 2),
                               atol=1e-12)
    dfused = rng.standard_normal(fused.shape)
    for g, r in zip(F.conv2d_maxpool2d_backward(arrange(dfused), fcache),
                    F.conv2d_maxpool2d_backward(np.ascontiguousarray(dfused), fcache)):
        np.testing.assert_allclose(g, r, atol=1e-12)
