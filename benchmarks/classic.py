"""The classic im2col network of "Deep Learning from Scratch" (Saitoh, 2016), ch. 7.

The baseline that the benchmark measures cnnlib against, written the way the
book and most "CNN from scratch" tutorials write it:

* convolution: im2col, one GEMM, col2im for the input gradient -- computed for
  the first layer too, although the image needs no gradient;
* max-pooling: im2col of every channel, ``argmax`` per window, and a
  ``np.zeros`` + fancy-index scatter + col2im for the backward pass;
* ReLU with a boolean mask (``out[mask] = 0``);
* affine layers that reshape their input to (N, D);
* softmax with cross-entropy, and plain SGD.

im2col/col2im are cnnlib's (``cnnlib.functional``), which loop over kernel
offsets exactly like the book's. One deliberate difference: every array stays
float32. The book's ``np.zeros((...))`` without a dtype makes float64 arrays
that silently upcast the pooling gradient and everything after it.

Only the speed is of interest here; ``tests/test_benchmarks.py`` checks that
this network computes the same gradients as cnnlib.
"""
import numpy as np

from cnnlib.functional import col2im, conv_output_size, im2col


class Convolution:
    def __init__(self, W, b, stride=1, pad=0):
        self.W, self.b, self.stride, self.pad = W, b, stride, pad

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, _, H, W = x.shape
        out_h = conv_output_size(H, FH, self.stride, self.pad)
        out_w = conv_output_size(W, FW, self.stride, self.pad)
        col = im2col(x, FH, FW, self.stride, self.pad)
        col_W = self.W.reshape(FN, -1).T
        out = np.dot(col, col_W) + self.b
        self.x_shape, self.col, self.col_W = x.shape, col, col_W
        return out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)

    def backward(self, dout):
        FN, C, FH, FW = self.W.shape
        dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
        self.db = np.sum(dout, axis=0)
        self.dW = np.dot(self.col.T, dout).transpose(1, 0).reshape(FN, C, FH, FW)
        dcol = np.dot(dout, self.col_W.T)
        return col2im(dcol, self.x_shape, FH, FW, self.stride, self.pad)


class Pooling:
    def __init__(self, pool_h, pool_w, stride=None):
        self.pool_h, self.pool_w = pool_h, pool_w
        self.stride = pool_h if stride is None else stride

    def forward(self, x):
        N, C, H, W = x.shape
        out_h = conv_output_size(H, self.pool_h, self.stride)
        out_w = conv_output_size(W, self.pool_w, self.stride)
        col = im2col(x, self.pool_h, self.pool_w, self.stride).reshape(-1, self.pool_h * self.pool_w)
        self.arg_max = np.argmax(col, axis=1)
        out = np.max(col, axis=1)
        self.x_shape = x.shape
        return out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)

    def backward(self, dout):
        dout = dout.transpose(0, 2, 3, 1)
        pool_size = self.pool_h * self.pool_w
        dmax = np.zeros((dout.size, pool_size), dtype=dout.dtype)     # the book: float64
        dmax[np.arange(self.arg_max.size), self.arg_max.flatten()] = dout.flatten()
        dmax = dmax.reshape(dout.shape + (pool_size,))
        dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
        return col2im(dcol, self.x_shape, self.pool_h, self.pool_w, self.stride)


class Relu:
    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Affine:
    def __init__(self, W, b):
        self.W, self.b = W, b

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    def forward(self, x, t):
        x = x - x.max(axis=1, keepdims=True)
        self.y = np.exp(x) / np.sum(np.exp(x), axis=1, keepdims=True)
        self.t = t
        n = len(t)
        return float(-np.sum(np.log(self.y[np.arange(n), t] + 1e-7)) / n)

    def backward(self):
        n = len(self.t)
        dx = self.y.copy()
        dx[np.arange(n), self.t] -= 1
        return dx / dx.dtype.type(n)


class ClassicNet:
    """A sequence of the layers above; ``params``/``grads`` dicts as in the book.

    ``from_cnnlib(net)`` copies the weights of a cnnlib Sequential made of
    Conv2D, ReLU, MaxPool2D, Flatten and Dense layers.
    """

    def __init__(self, layers, params, owners):
        self.layers, self.params, self.owners = layers, params, owners    # owners: key -> layer
        self.last_layer = SoftmaxWithLoss()
        self.grads = {}

    @classmethod
    def from_cnnlib(cls, net):
        layers, params, owners = [], {}, {}
        for i, layer in enumerate(net.textbook_layers()):
            kind = type(layer).__name__
            if kind in ("Conv2D", "Dense"):
                W, b = layer.params["W"].copy(), layer.params["b"].copy()
                ours = Convolution(W, b, layer.stride, layer.pad) if kind == "Conv2D" else Affine(W, b)
                params[f"W{i}"], params[f"b{i}"] = W, b
                owners[f"W{i}"] = owners[f"b{i}"] = ours
                layers.append(ours)
            elif kind == "ReLU":
                layers.append(Relu())
            elif kind == "MaxPool2D":
                layers.append(Pooling(layer.size, layer.size, layer.stride))
            elif kind != "Flatten":          # Affine flattens its input itself
                raise ValueError(f"no classic version of {layer!r}")
        return cls(layers, params, owners)

    def predict(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def gradient(self, x, t):
        """Loss, and the gradient of every parameter in ``self.grads``."""
        loss = self.loss(x, t)
        dout = self.last_layer.backward()
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        for key, layer in self.owners.items():
            self.grads[key] = layer.dW if key[0] == "W" else layer.db
        return loss

    def train_step(self, x, t, lr=0.01):
        loss = self.gradient(x, t)
        for key in self.params:              # SGD, in place: the layers hold the same arrays
            self.params[key] -= lr * self.grads[key]
        return loss
