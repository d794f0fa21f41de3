"""Optimisers: update every layer's ``params`` in place from its ``grads``.

Construct with a network (anything with ``.layers``) or a list of layers, then
call ``step()`` after each backward pass. Updates are in place, so the arrays
keep their dtype and a layer sees the new values at its next call.
"""
import numpy as np

__all__ = ["SGD", "Momentum", "Adam"]


class Optimizer:
    def __init__(self, net, lr):
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.layers = list(getattr(net, "layers", net))
        self.lr = lr
        self.state = {}

    def parameters(self):
        """Yield (key, param, grad) for every parameter; key identifies it."""
        for i, layer in enumerate(self.layers):
            for name, p in layer.params.items():
                if name not in layer.grads:
                    raise RuntimeError(f"layer {i} ({layer!r}) has no gradient for {name!r}: "
                                       "call backward before step")
                yield (i, name), p, layer.grads[name]

    def step(self):
        for key, p, g in self.parameters():
            self.update(key, p, g.astype(p.dtype, copy=False))


class SGD(Optimizer):
    """p <- p - lr * g."""

    def update(self, key, p, g):
        p -= self.lr * g


class Momentum(Optimizer):
    """v <- mu * v - lr * g;  p <- p + v (heavy ball)."""

    def __init__(self, net, lr=0.01, momentum=0.9):
        super().__init__(net, lr)
        self.momentum = momentum

    def update(self, key, p, g):
        v = self.state.setdefault(key, np.zeros_like(p))
        v *= self.momentum
        v -= self.lr * g
        p += v


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as torch.optim.Adam."""

    def __init__(self, net, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(net, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0

    def step(self):
        self.t += 1
        super().step()

    def update(self, key, p, g):
        m, v = self.state.setdefault(key, (np.zeros_like(p), np.zeros_like(p)))
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        m_hat = m / (1 - self.beta1 ** self.t)
        v_hat = v / (1 - self.beta2 ** self.t)
        p -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.dtype, copy=False)
