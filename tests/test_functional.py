"""Convolution and pooling: naive loops vs classic im2col vs the fast path vs SciPy."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from cnnlib import fast
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
    ref = F.conv2d_forward_naive(x, wt, b, stride, pad)[0]
    assert ref.shape == (n, f, (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1)
    np.testing.assert_allclose(scipy_conv(x, wt, b, stride, pad), ref, rtol=1e-10, atol=1e-10)
    out_i, cache_i = F.conv2d_forward_im2col(x, wt, b, stride, pad)
    out_f, cache_f = fast.conv2d_forward_fast(x, wt, b, stride, pad)
    np.testing.assert_allclose(out_i, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out_f, ref, rtol=1e-10, atol=1e-10)

    dout = rng.standard_normal(ref.shape)
    ref_grads = F.conv2d_backward_naive(dout, (x, wt, stride, pad))
    for grads in (F.conv2d_backward_im2col(dout, cache_i), fast.conv2d_backward_fast(dout, cache_f)):
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
    ref = F.maxpool2d_forward_naive(x, size, stride)[0]
    out_i, cache_i = F.maxpool2d_forward_im2col(x, size, stride)
    out_f, cache_f = fast.maxpool2d_forward_fast(x, size, stride)
    np.testing.assert_array_equal(out_i, ref)
    np.testing.assert_array_equal(out_f, ref)
    dout = rng.standard_normal(ref.shape)
    dref = F.maxpool2d_backward_naive(dout, (x, size, stride))
    np.testing.assert_allclose(F.maxpool2d_backward_im2col(dout, cache_i), dref, atol=1e-12)
    np.testing.assert_allclose(fast.maxpool2d_backward_fast(dout, cache_f), dref, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(pool_case())
def test_avgpool_matches_loops_and_its_gradient_is_the_adjoint(case):
    n, c, h, w, size, stride, _, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    out, cache = fast.avgpool2d_forward_fast(x, size, stride)
    np.testing.assert_allclose(out, F.avgpool2d_forward_naive(x, size, stride)[0], atol=1e-12)
    y = rng.standard_normal(out.shape)
    # avg-pool is linear, so its backward is its adjoint: <A x, y> == <x, A^T y>
    np.testing.assert_allclose(np.sum(out * y), np.sum(x * fast.avgpool2d_backward_fast(y, cache)))


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
    fwd, bwd = ((fast.conv2d_forward_fast, fast.conv2d_backward_fast) if impl == "fast"
                else (F.conv2d_forward_im2col, F.conv2d_backward_im2col))
    out, cache = fwd(x, w, b, 1, 1)
    grads = bwd(np.ones_like(out), cache)
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    pool_fwd, pool_bwd = ((fast.maxpool2d_forward_fast, fast.maxpool2d_backward_fast) if impl == "fast"
                          else (F.maxpool2d_forward_im2col, F.maxpool2d_backward_im2col))
    p, pc = pool_fwd(out)
    assert p.dtype == np.float32 and pool_bwd(np.ones_like(p), pc).dtype == np.float32
    if impl == "fast":
        fused, fc = fast.conv2d_relu_maxpool2d_forward_fast(x, w, b, 1, 1, 2, relu=True)
        assert fused.dtype == np.float32
        assert all(g.dtype == np.float32 for g in fast.conv2d_relu_maxpool2d_backward_fast(np.ones_like(fused), fc))


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
    conv = F.conv2d_forward_naive(x, wt, b, stride, pad)[0]
    act = np.maximum(conv, 0) if relu else conv
    ref = F.maxpool2d_forward_naive(act, size)[0]
    out, cache = fast.conv2d_relu_maxpool2d_forward_fast(x, wt, b, stride, pad, size, relu=relu)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    inference, none = fast.conv2d_relu_maxpool2d_forward_fast(x, wt, b, stride, pad, size, relu=relu, keep_cache=False)
    np.testing.assert_array_equal(inference, out)
    assert none is None

    dout = rng.standard_normal(ref.shape)
    dact = F.maxpool2d_backward_naive(dout, (act, size, size))
    dconv = dact * (conv > 0) if relu else dact
    ref_grads = F.conv2d_backward_naive(dconv, (x, wt, stride, pad))
    grads = fast.conv2d_relu_maxpool2d_backward_fast(dout, cache)
    for name, g, r in zip(("dx", "dw", "db"), grads, ref_grads):
        assert g.shape == r.shape, name
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10, err_msg=name)
    assert fast.conv2d_relu_maxpool2d_backward_fast(dout, cache, need_dx=False)[0] is None


@pytest.mark.parametrize("layout", ["standard", "batch-last"])
def test_fast_path_accepts_either_memory_layout(layout):
    """The fast path's outputs are batch-last views; inputs and gradients in
    plain (N, C, H, W) order must give the same numbers."""
    rng = np.random.default_rng(0)

    def arrange(a):
        return np.ascontiguousarray(a) if layout == "standard" else \
            np.ascontiguousarray(a.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    x, wt, b = rng.standard_normal((3, 2, 9, 8)), rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    ref = F.conv2d_forward_naive(x, wt, b, 2, 1)[0]
    out, cache = fast.conv2d_forward_fast(arrange(x), wt, b, 2, 1)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    dout = rng.standard_normal(ref.shape)
    for g, r in zip(fast.conv2d_backward_fast(arrange(dout), cache), F.conv2d_backward_naive(dout, (x, wt, 2, 1))):
        np.testing.assert_allclose(g, r, atol=1e-12)
    p, pcache = fast.maxpool2d_forward_fast(arrange(x), 3, 2)
    np.testing.assert_array_equal(p, F.maxpool2d_forward_naive(x, 3, 2)[0])
    dp = rng.standard_normal(p.shape)
    np.testing.assert_allclose(fast.maxpool2d_backward_fast(arrange(dp), pcache),
                               F.maxpool2d_backward_naive(dp, (x, 3, 2)), atol=1e-12)
    fused, fcache = fast.conv2d_relu_maxpool2d_forward_fast(arrange(x), wt, b, 1, 1, 2, relu=True)
    np.testing.assert_allclose(fused, F.maxpool2d_forward_naive(np.maximum(F.conv2d_forward_naive(x, wt, b, 1, 1)[0], 0), 2)[0],
                               atol=1e-12)
    dfused = rng.standard_normal(fused.shape)
    for g, r in zip(fast.conv2d_relu_maxpool2d_backward_fast(arrange(dfused), fcache),
                    fast.conv2d_relu_maxpool2d_backward_fast(np.ascontiguousarray(dfused), fcache)):
        np.testing.assert_allclose(g, r, atol=1e-12)


TIERS = {"conv2d": [(F.conv2d_forward_naive, F.conv2d_backward_naive),
                    (F.conv2d_forward_im2col, F.conv2d_backward_im2col),
                    (fast.conv2d_forward_fast, fast.conv2d_backward_fast)],
         "maxpool2d": [(F.maxpool2d_forward_naive, F.maxpool2d_backward_naive),
                       (F.maxpool2d_forward_im2col, F.maxpool2d_backward_im2col),
                       (fast.maxpool2d_forward_fast, fast.maxpool2d_backward_fast)],
         "avgpool2d": [(F.avgpool2d_forward_naive, F.avgpool2d_backward_naive),
                       (fast.avgpool2d_forward_fast, fast.avgpool2d_backward_fast)]}


@pytest.mark.parametrize("op", sorted(TIERS))
def test_every_tier_has_the_same_contract(op):
    """forward(x, ...) -> (out, cache) and backward(dout, cache) for every tier,
    with the same parameter names, and the same numbers."""
    import inspect
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 6))
    args = (rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4), 2, 1) if op == "conv2d" else (3, 2)
    signatures = {str(inspect.signature(fwd)) for fwd, _ in TIERS[op]}
    assert len(signatures) == 1, signatures
    assert len({str(inspect.signature(bwd)) for _, bwd in TIERS[op]}) == 1
    results = []
    for fwd, bwd in TIERS[op]:
        out, cache = fwd(x, *args)
        dout = np.random.default_rng(12).standard_normal(out.shape)
        grads = bwd(dout, cache)
        results.append((out, grads if isinstance(grads, tuple) else (grads,)))
    for out, grads in results[1:]:
        np.testing.assert_allclose(out, results[0][0], atol=1e-12)
        for g, g0 in zip(grads, results[0][1]):
            np.testing.assert_allclose(g, g0, atol=1e-12)
