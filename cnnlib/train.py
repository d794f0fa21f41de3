"""Mini-batch training, batched evaluation and a quiet progress bar.

Nothing is printed per iteration: one progress line per epoch, redrawn in
place, and a ``history`` dict of per-epoch numbers to plot
(``cnnlib.viz.plot_history``).
"""
import sys
import time

import numpy as np

from .fast import keep_freed_memory
from .parallel import auto_step

__all__ = ["minibatches", "predict_logits", "predict", "evaluate", "train_step", "fit",
           "ProgressBar"]


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
    """One forward/backward/update on a batch; returns (loss, number correct).

    A loss that is not finite (inf or NaN: the learning rate is too high, or
    the data is broken) raises FloatingPointError before the update, so the
    weights stay those of the last good step.
    """
    logits = net.forward(xb, training=True)
    loss = loss_fn.forward(logits, yb)
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss is {loss}; the weights were not updated "
                                 "(try a lower learning rate)")
    net.backward(loss_fn.backward())
    optimizer.step()
    return loss, int((logits.argmax(axis=1) == yb).sum())


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


def _check_finite(X, name):
    if np.issubdtype(np.asarray(X).dtype, np.floating) and not np.isfinite(X).all():
        bad = int(np.count_nonzero(~np.isfinite(X)))
        raise ValueError(f"fit: {name} must hold finite numbers, got {bad} NaN or inf "
                         f"value(s) in an array of shape {np.shape(X)}")


def fit(net, loss_fn, optimizer, X, y, *, epochs=1, batch_size=100, validation=None,
        seed=0, progress=True, step="auto"):
    """Train with shuffled mini-batches; returns a history dict.

    X: (N, C, H, W) float, y: (N,) int. ``validation=(X_val, y_val)`` is
    evaluated (in batches) after each epoch. ``seed`` fixes the shuffling.
    history: "loss", "acc" (per epoch, averaged over that epoch's batches),
    "val_loss", "val_acc" (if validation), "batch_loss" (per step), "time"
    (seconds per epoch).

    ``step(net, loss_fn, optimizer, xb, yb) -> (loss, number correct)`` does
    one update. ``"auto"`` (the default) is ``cnnlib.parallel.auto_step``
    for this network and batch size: the batch split over the machine's
    cores if the step has enough work to pay for the split
    (``parallel.split_threshold``; in worker processes on Linux, else in
    threads; the same numbers as train_step up to float rounding), else the
    plain step with one BLAS thread; pass
    ``step=train_step`` for the plain step. During training the weights of a
    split in processes live in shared memory; fit closes the step at the end,
    which moves them back into the network's own arrays. fit
    also calls ``cnnlib.fast.keep_freed_memory()``, so that each step reuses
    the memory of the last instead of faulting in fresh pages.

    Faults: data with NaN or inf is refused before any update; a loss that
    becomes inf or NaN stops training with FloatingPointError naming the
    epoch and step (the weights stay those of the last good step); an
    interrupt (Ctrl-C, or Kernel -> Interrupt in Jupyter) ends training
    cleanly: it prints where it stopped and returns the history so far.
    """
    _check_xy(X, y)
    _check_finite(X, "X")
    if validation:
        _check_xy(*validation)
        _check_finite(validation[0], "the validation images")
    if step == "auto":
        step = auto_step(net=net, batch=X[:batch_size])
        try:
            return fit(net, loss_fn, optimizer, X, y, epochs=epochs, batch_size=batch_size,
                       validation=validation, seed=seed, progress=progress, step=step)
        finally:
            getattr(step, "close", lambda: None)()
    keep_freed_memory()
    rng = np.random.default_rng(seed)
    keys = ["loss", "acc", "batch_loss", "time"] + (["val_loss", "val_acc"] if validation else [])
    history = {k: [] for k in keys}
    n_batches = -(-len(X) // batch_size)
    epoch = b = 0
    bar = None
    try:
        for epoch in range(1, epochs + 1):
            bar = ProgressBar(n_batches, f"epoch {epoch}/{epochs}") if progress else None
            start, total_loss, correct = time.perf_counter(), 0.0, 0
            for b, idx in enumerate(minibatches(len(X), batch_size, rng), start=1):
                try:
                    loss, n_correct = step(net, loss_fn, optimizer, X[idx], y[idx])
                except FloatingPointError as err:
                    raise FloatingPointError(f"fit: epoch {epoch}, step {b} of {n_batches}: {err}") \
                        from None
                if not np.isfinite(loss):
                    raise FloatingPointError(f"fit: epoch {epoch}, step {b} of {n_batches}: loss is "
                                             f"{loss} (try a lower learning rate)")
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
                bar = None
    except KeyboardInterrupt:
        if bar:
            bar.stream.write("\n")
        print(f"fit: interrupted in epoch {epoch} of {epochs} after {len(history['batch_loss'])} "
              f"steps; returning the history of the completed steps")
    return history
