"""cnnlib against PyTorch (skipped when torch is not installed).

CI installs torch==2.13.0, so these run there: forward outputs, every
gradient and the optimisers must agree with the framework everyone trusts.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nnF = torch.nn.functional

from cnnlib import layers as L  # noqa: E402
from cnnlib import losses, nets, optim  # noqa: E402

torch.set_default_dtype(torch.float64)


def t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


@pytest.mark.parametrize("impl", ["fast", "im2col"])
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 1), (3, 2)])
def test_conv_matches_torch(impl, stride, pad):
    rng = np.random.default_rng(stride * 10 + pad)
    conv = L.Conv2D(3, 5, (3, 4), stride=stride, pad=pad, rng=rng, dtype=np.float64, impl=impl)
    x = rng.standard_normal((2, 3, 9, 11))
    out = conv.forward(x)
    xt, wt, bt = t(x, True), t(conv.params["W"], True), t(conv.params["b"], True)
    ref = nnF.conv2d(xt, wt, bt, stride=stride, padding=pad)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx = conv.backward(dout)
    ref.backward(t(dout))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.grads["W"], wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.grads["b"], bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size,stride", [(2, None), (3, 2), (2, 1), (3, 3)])
def test_maxpool_matches_torch_with_ties(size, stride):
    rng = np.random.default_rng(size)
    x = rng.integers(0, 3, (2, 3, 8, 7)).astype(np.float64)      # many ties
    pool = L.MaxPool2D(size, stride)
    out = pool.forward(x)
    xt = t(x, True)
    ref = nnF.max_pool2d(xt, size, stride)
    np.testing.assert_array_equal(out, ref.detach().numpy())
    dout = rng.standard_normal(out.shape)
    ref.backward(t(dout))
    np.testing.assert_allclose(pool.backward(dout), xt.grad.numpy(), atol=1e-12)


def test_batchnorm_matches_torch_train_and_eval():
    rng = np.random.default_rng(0)
    bn = L.BatchNorm2D(3, dtype=np.float64)
    tbn = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=0.1)
    for _ in range(3):
        x = rng.standard_normal((4, 3, 5, 5)) * 2 + 1
        out = bn.forward(x, training=True)
        xt = t(x, True)
        ref = tbn(xt)
        np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        dout = rng.standard_normal(out.shape)
        ref.backward(t(dout))
        np.testing.assert_allclose(bn.backward(dout), xt.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(bn.buffers["running_mean"], tbn.running_mean.numpy(), rtol=1e-10)
    np.testing.assert_allclose(bn.buffers["running_var"], tbn.running_var.numpy(), rtol=1e-10)
    tbn.eval()
    x = rng.standard_normal((2, 3, 5, 5))
    np.testing.assert_allclose(bn.forward(x, training=False), tbn(t(x)).detach().numpy(), rtol=1e-10)


def torch_simple_conv_net(net):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(4320, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    with torch.no_grad():
        textbook = list(net.textbook_layers())
        for ours, theirs in zip([textbook[i] for i in (0, 4, 6)], [model[i] for i in (0, 4, 6)]):
            w = ours.params["W"]
            theirs.weight.copy_(torch.tensor(w if w.ndim == 4 else w.T))   # dense: (in, out) vs (out, in)
            theirs.bias.copy_(torch.tensor(ours.params["b"]))
    return model


@pytest.mark.parametrize("fast", [True, False])
def test_simple_conv_net_and_adam_match_torch(fast):
    net = nets.SimpleConvNet(dtype=np.float64, seed=0, fast=fast)
    model = torch_simple_conv_net(net)
    rng = np.random.default_rng(1)
    loss_fn = losses.SoftmaxCrossEntropy()
    opt, topt = optim.Adam(net, 1e-3), torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(3):
        x, y = rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)
        logits = net.forward(x)
        loss = loss_fn.forward(logits, y)
        net.backward(loss_fn.backward())
        opt.step()
        topt.zero_grad()
        tlogits = model(t(x))
        tloss = nnF.cross_entropy(tlogits, torch.tensor(y))
        tloss.backward()
        topt.step()
        np.testing.assert_allclose(logits, tlogits.detach().numpy(), rtol=1e-9, atol=1e-12)
        assert loss == pytest.approx(tloss.item(), rel=1e-12)
    textbook = list(net.textbook_layers())
    np.testing.assert_allclose(textbook[4].params["W"].T, model[4].weight.detach().numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(textbook[0].params["W"], model[0].weight.detach().numpy(), rtol=1e-8, atol=1e-12)
