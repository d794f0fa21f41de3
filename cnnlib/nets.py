"""Networks: a sequential container and the notebook-7 SimpleConvNet."""
import numpy as np

from .layers import Conv2D, ConvPoolBlock, Dense, Flatten, MaxPool2D, ReLU

__all__ = ["Sequential", "SimpleConvNet"]


class Sequential:
    """Runs layers in order; backward runs them in reverse.

    ``forward(x, training=True) -> output``, ``backward(dout) -> dx`` (None
    when the first layer skips its input gradient), ``.layers`` the list.
    """

    def __init__(self, layers):
        self.layers = list(layers)

    def __repr__(self):
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"{type(self).__name__}([\n{inner}\n])"

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def forward(self, x, training=True):
        self._ran = []                     # what ran, for backward
        for step in self.steps():
            x = step.forward(x, training)
            self._ran.append(step)
        return x

    def backward(self, dout):
        if not hasattr(self, "_ran"):
            raise RuntimeError("Sequential.backward: call forward first (backward uses its caches)")
        for step in reversed(self._ran):
            dout = step.backward(dout)
        return dout

    def steps(self):
        """The layers in order, except that each fast Conv2D [-> ReLU] ->
        MaxPool2D (non-overlapping) runs as one fused ConvPoolBlock: the same
        numbers, several times faster (see cnnlib.functional)."""
        i = 0
        while i < len(self.layers):
            n = ConvPoolBlock.match(self.layers, i)
            if n:
                conv, *middle, pool = self.layers[i:i + n]
                yield ConvPoolBlock(conv, middle[0] if middle else None, pool)
                i += n
            else:
                yield self.layers[i]
                i += 1

    def named_arrays(self):
        """Yield ("<layer index>.<name>", dict, name) for every parameter and buffer
        (running statistics), in a stable order; used by io and the optimisers."""
        for i, layer in enumerate(self.layers):
            for store in (layer.params, getattr(layer, "buffers", {})):
                for name in store:
                    yield f"{i}.{name}", store, name

    def num_params(self):
        return sum(layer.params[k].size for layer in self.layers for k in layer.params)

    def astype(self, dtype):
        """Cast every parameter and buffer to dtype (e.g. float64 for a gradient check)."""
        for _, store, name in self.named_arrays():
            store[name] = store[name].astype(dtype)
        return self

    def predict(self, x, batch_size=1000):
        """Class ids (N,) from batched inference; see cnnlib.train.predict."""
        from .train import predict_logits
        return predict_logits(self, x, batch_size).argmax(axis=1)


class SimpleConvNet(Sequential):
    """conv(30 filters 5x5) -> ReLU -> max-pool 2 -> dense 100 -> ReLU -> dense 10.

    x: (N, C, H, W) -> logits (N, n_classes). With the default 1x28x28 input:
    conv 30x24x24, pool 30x12x12 = 4320 features. He initialisation by default
    (std 0.01 stalls training); ``seed`` makes the weights reproducible.
    """

    def __init__(self, input_shape=(1, 28, 28), filters=30, kernel_size=5, hidden=100,
                 n_classes=10, *, init="he", seed=0, dtype=np.float32, impl="fast"):
        C, H, W = input_shape
        rng = np.random.default_rng(seed)
        conv = Conv2D(C, filters, kernel_size, init=init, rng=rng, dtype=dtype, impl=impl,
                      input_grad=False)          # the image needs no gradient
        pool = MaxPool2D(2, impl=impl)
        n_features = filters * ((H - kernel_size + 1) // 2) * ((W - kernel_size + 1) // 2)
        super().__init__([conv, ReLU(), pool, Flatten(),
                          Dense(n_features, hidden, init=init, rng=rng, dtype=dtype), ReLU(),
                          Dense(hidden, n_classes, init=init, rng=rng, dtype=dtype)])
