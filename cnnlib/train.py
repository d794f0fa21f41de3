"""Mini-batch training, batched evaluation and a quiet progress bar.

Nothing is printed per iteration: one progress line per epoch, redrawn in
place, and a ``history`` dict of per-epoch numbers to plot
(``cnnlib.viz.plot_history``).
"""
import copy
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .layers import Dropout, _BatchNorm

__all__ = ["minibatches", "predict_logits", "predict", "evaluate", "train_step", "ParallelStep",
           "fit", "ProgressBar"]


def _check_xy(X, y):
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")


def minibatches(n, batch_size, rng=None):
    """Index arrays of consecutive batches over range(n), shuffled if rng is given."""
    order = np.arange(n) if rng is None else rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def predict_logits(net, X, batch_size=1000):
    """net's outputs for X in inference mode, batch by batch.

    Memory stays bounded by one batch's activations whatever len(X) is:
    one forward pass over 70,000 images at once would need gigabytes.
    """
    outs = [net.forward(X[idx], training=False) for idx in minibatches(len(X), batch_size)]
    return np.concatenate(outs)


def predict(net, X, batch_size=1000):
    """Predicted class ids (N,)."""
    return predict_logits(net, X, batch_size).argmax(axis=1)


def evaluate(net, loss_fn, X, y, batch_size=1000):
    """(mean loss, accuracy) of net on (X, y), computed in batches."""
    _check_xy(X, y)
    total_loss, correct = 0.0, 0
    for idx in minibatches(len(X), batch_size):
        logits = net.forward(X[idx], training=False)
        total_loss += loss_fn.forward(logits, y[idx]) * len(idx)
        correct += int((logits.argmax(axis=1) == y[idx]).sum())
    return total_loss / len(X), correct / len(X)


def train_step(net, loss_fn, optimizer, xb, yb):
    """One forward/backward/update on a batch; returns (loss, number correct)."""
    logits = net.forward(xb, training=True)
    loss = loss_fn.forward(logits, yb)
    net.backward(loss_fn.backward())
    optimizer.step()
    return loss, int((logits.argmax(axis=1) == yb).sum())


class ParallelStep:
    """A training step that splits each batch over ``threads`` threads (data parallelism).

    Use it like train_step: ``fit(..., step=ParallelStep(2))``, or call
    ``step(net, loss_fn, optimizer, xb, yb) -> (loss, number correct)``.

    Every thread runs forward and backward on a fixed part of the batch (the
    first half, the second half) with its own shallow copy of the layers: the
    weights are shared, the caches and gradients are not. Each part's
    gradients are weighted by its share of the batch and summed in a fixed
    order, then the optimizer takes one step. So the result is train_step's
    up to float rounding, and the same on every run.

    Why it is faster: NumPy releases the GIL inside BLAS and inside large
    elementwise operations, so the threads really run at the same time, one
    per core. Much of a step is memory-bound elementwise work that a
    multi-threaded BLAS cannot speed up; here every core does its share of it.
    BLAS is limited to ``blas_threads`` threads per call meanwhile (with
    threadpoolctl): two threads each starting two BLAS threads would fight
    over two cores and run several times slower.

    Networks whose training forward pass depends on the whole batch or on a
    random stream (BatchNorm, Dropout) are refused.
    """

    def __init__(self, threads=2, blas_threads=1):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads, self.blas_threads = threads, blas_threads
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self._blas = None

    def __repr__(self):
        return f"ParallelStep(threads={self.threads}, blas_threads={self.blas_threads})"

    def _blas_limit(self):
        if self._blas is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError as err:
                raise ImportError("ParallelStep limits BLAS threads with threadpoolctl: "
                                  "python -m pip install threadpoolctl") from err
            self._blas = ThreadpoolController()       # finds the BLAS libraries once
        return self._blas.limit(limits=self.blas_threads, user_api="blas")

    @staticmethod
    def _replica(net):
        """A copy of net whose layers share the parameter dicts but nothing else."""
        twin = copy.copy(net)
        twin.layers = [copy.copy(layer) for layer in net.layers]
        for layer in twin.layers:
            layer.grads = {}
        return twin

    @staticmethod
    def _run(net, loss_fn, xb, yb, share):
        logits = net.forward(xb, training=True)
        loss = loss_fn.forward(logits, yb)
        # The loss is the mean over this part; scaled by the part's share of
        # the batch, the gradients just add up to those of the whole batch.
        dlogits = loss_fn.backward()
        net.backward(dlogits * dlogits.dtype.type(share))
        return loss, int((logits.argmax(axis=1) == yb).sum())

    def __call__(self, net, loss_fn, optimizer, xb, yb):
        for layer in net.layers:
            if isinstance(layer, _BatchNorm) or isinstance(layer, Dropout) and layer.p > 0:
                raise ValueError(f"ParallelStep: {layer!r} depends on the whole batch or a random "
                                 "stream in training; train this network with train_step")
        _check_xy(xb, yb)
        k = min(self.threads, len(xb))
        bounds = [len(xb) * i // k for i in range(k + 1)]     # fixed parts, as equal as possible
        parts = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        shares = [(b - a) / len(xb) for a, b in zip(bounds, bounds[1:])]
        with self._blas_limit():
            nets = [net] + [self._replica(net) for _ in parts[1:]]
            loss_fns = [loss_fn] + [copy.copy(loss_fn) for _ in parts[1:]]
            jobs = [self._pool.submit(self._run, nets[i], loss_fns[i], xb[parts[i]], yb[parts[i]],
                                      shares[i]) for i in range(1, k)]
            results = [self._run(net, loss_fn, xb[parts[0]], yb[parts[0]], shares[0])]
            results += [job.result() for job in jobs]
            for i, layer in enumerate(net.layers):        # the sum, in a fixed order
                for name, g in layer.grads.items():
                    for twin in nets[1:]:
                        g += twin.layers[i].grads[name]
            optimizer.step()
        loss = sum(share * result[0] for share, result in zip(shares, results))
        return loss, sum(result[1] for result in results)


class ProgressBar:
    """A one-line text progress bar, redrawn in place at most every 0.25 s.

    Plain text on stdout (no widgets, nothing on stderr), so it works in a
    terminal, in JupyterLab and in a stored notebook.
    """

    def __init__(self, total, prefix="", width=24, stream=None, min_interval=0.25):
        self.total, self.prefix, self.width = total, prefix, width
        self.stream = stream or sys.stdout
        self.min_interval, self.start, self.last = min_interval, time.perf_counter(), 0.0

    def update(self, done, suffix="", force=False):
        now = time.perf_counter()
        if not force and done < self.total and now - self.last < self.min_interval:
            return
        self.last = now
        filled = int(self.width * done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.prefix} [{bar}] {done}/{self.total} {suffix} "
                          f"{now - self.start:.1f}s")
        self.stream.flush()

    def close(self, suffix=""):
        self.update(self.total, suffix, force=True)
        self.stream.write("\n")
        self.stream.flush()


def fit(net, loss_fn, optimizer, X, y, *, epochs=1, batch_size=100, validation=None,
        seed=0, progress=True, step=train_step):
    """Train with shuffled mini-batches; returns a history dict.

    X: (N, C, H, W) float, y: (N,) int. ``validation=(X_val, y_val)`` is
    evaluated (in batches) after each epoch. ``seed`` fixes the shuffling.
    history: "loss", "acc" (per epoch, averaged over that epoch's batches),
    "val_loss", "val_acc" (if validation), "batch_loss" (per step), "time"
    (seconds per epoch).
    """
    _check_xy(X, y)
    rng = np.random.default_rng(seed)
    keys = ["loss", "acc", "batch_loss", "time"] + (["val_loss", "val_acc"] if validation else [])
    history = {k: [] for k in keys}
    n_batches = -(-len(X) // batch_size)
    for epoch in range(1, epochs + 1):
        bar = ProgressBar(n_batches, f"epoch {epoch}/{epochs}") if progress else None
        start, total_loss, correct = time.perf_counter(), 0.0, 0
        for b, idx in enumerate(minibatches(len(X), batch_size, rng), start=1):
            loss, n_correct = step(net, loss_fn, optimizer, X[idx], y[idx])
            history["batch_loss"].append(loss)
            total_loss += loss * len(idx)
            correct += n_correct
            if bar:
                bar.update(b, f"loss {total_loss / min(b * batch_size, len(X)):.4f}")
        history["loss"].append(total_loss / len(X))
        history["acc"].append(correct / len(X))
        summary = f"loss {history['loss'][-1]:.4f} acc {history['acc'][-1]:.4f}"
        if validation:
            val_loss, val_acc = evaluate(net, loss_fn, *validation)
            history["val_loss"].append(val_loss)
            history["val_acc"].append(val_acc)
            summary += f" | val loss {val_loss:.4f} acc {val_acc:.4f}"
        history["time"].append(time.perf_counter() - start)
        if bar:
            bar.close(summary)
    return history
