"""Networks: a sequential container and the notebook-07 SimpleConvNet."""
import numpy as np

from .fast import fuse_layers
from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

__all__ = ["Sequential", "SimpleConvNet"]


class Sequential:
    """Runs exactly the layers in ``.layers``, in order, each once.

    ``forward(x, training=True) -> output`` is ``layer.forward`` for each
    layer; ``backward(dout) -> dx`` is ``layer.backward`` for each layer in
    reverse (None when the first layer skips its input gradient). Nothing is
    fused or swapped behind the reader's back: a fused layer is used only
    where it stands in ``.layers`` (see cnnlib.fast).
    """

    def __init__(self, layers):
        self.layers = list(layers)

    def __repr__(self):
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"{type(self).__name__}([\n{inner}\n])"

    def __call__(self, x, training=True):
        return self.forward(x, training)

    def forward(self, x, training=True):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def textbook_layers(self):
        """The layers with every fused layer expanded into those it stands
        for: the same list for a network and its fast twin."""
        for layer in self.layers:
            yield from getattr(layer, "fused", (layer,))

    def named_arrays(self):
        """Yield ("<layer index>.<name>", dict, name) for every parameter and buffer
        (running statistics), in a stable order; used by io and the optimisers.
        Indices count textbook layers, so a network and its fast twin (fused
        layers) save and load the same files."""
        for i, layer in enumerate(self.textbook_layers()):
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

    ``fast=True`` (the default) runs conv -> ReLU -> pool as one
    ``cnnlib.fast.FusedConvPool`` layer, and ``net.layers`` shows it;
    ``fast=False`` keeps the textbook layers of notebook 07 (Conv2D and
    MaxPool2D on the ``impl`` tier, im2col by default). With the same seed
    both start from the same weights and compute the same numbers.
    """

    def __init__(self, input_shape=(1, 28, 28), filters=30, kernel_size=5, hidden=100,
                 n_classes=10, *, init="he", seed=0, dtype=np.float32, fast=True, impl="im2col"):
        C, H, W = input_shape
        rng = np.random.default_rng(seed)
        conv = Conv2D(C, filters, kernel_size, init=init, rng=rng, dtype=dtype, impl=impl,
                      input_grad=False)          # the image needs no gradient
        pool = MaxPool2D(2, impl=impl)
        n_features = filters * ((H - kernel_size + 1) // 2) * ((W - kernel_size + 1) // 2)
        layers = [conv, ReLU(), pool, Flatten(),
                  Dense(n_features, hidden, init=init, rng=rng, dtype=dtype), ReLU(),
                  Dense(hidden, n_classes, init=init, rng=rng, dtype=dtype)]
        super().__init__(fuse_layers(layers) if fast else layers)
