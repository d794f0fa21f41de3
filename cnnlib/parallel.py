"""Data parallelism: one training step, the batch split over threads.

``ParallelStep(threads)`` is a drop-in for ``cnnlib.train.train_step``::

    with ParallelStep(2) as step:
        fit(net, loss_fn, optimizer, X, y, step=step)

Every thread runs forward and backward on a fixed part of the batch (the
first half, the second half) with its own shallow copy of the layers: the
weights are shared, the caches and gradients are not. Each part's gradients
are weighted by its share of the batch and summed in a fixed order, then the
optimizer takes one step. So the result is train_step's up to float
rounding, and the same on every run.

Why it is faster: NumPy releases the GIL inside BLAS and inside large
elementwise operations, so the threads really run at the same time, one per
core. Much of a step is memory-bound elementwise work that a multi-threaded
BLAS cannot speed up; here every core does its share of it. BLAS is limited
to ``blas_threads`` threads per call meanwhile (threadpoolctl): two threads
each starting two BLAS threads would fight over two cores.

Only layers whose training forward pass treats each sample on its own can be
split; each layer says so itself (``layer.per_sample``). Batch norm (batch
statistics) and active dropout (one random stream) are refused.
"""
import copy
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["ParallelStep"]


class ParallelStep:
    """``step(net, loss_fn, optimizer, xb, yb) -> (loss, number correct)``,
    like train_step, with the batch split over ``threads`` threads.

    The worker threads are shut down by ``close()``, by leaving a ``with``
    block, or when the object is garbage-collected.
    """

    def __init__(self, threads=2, blas_threads=1):
        for name, value in (("threads", threads), ("blas_threads", blas_threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParallelStep: {name} must be a positive integer, got {value!r}")
        self.threads, self.blas_threads = threads, blas_threads
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self._finalizer = weakref.finalize(self, self._pool.shutdown) if self._pool else None
        self._blas = None

    def __repr__(self):
        return f"ParallelStep(threads={self.threads}, blas_threads={self.blas_threads})"

    def close(self):
        """Stop the worker threads (waits for a running step to finish)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

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
            layer.grads, layer.cache = {}, None
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
        if self._finalizer is not None and not self._finalizer.alive:
            raise RuntimeError("ParallelStep: this step was closed; make a new one")
        for layer in net.layers:
            if not layer.per_sample:
                raise ValueError(f"ParallelStep: {layer!r} does not treat each sample on its own "
                                 "in training (batch statistics or a random stream); train this "
                                 "network with cnnlib.train.train_step")
        if len(xb) != len(yb):
            raise ValueError(f"ParallelStep: xb has {len(xb)} samples but yb has {len(yb)}")
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
            loss = sum(share * result[0] for share, result in zip(shares, results))
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss is {loss}; the weights were not updated "
                                         "(try a lower learning rate)")
            for i, layer in enumerate(net.layers):        # the sum, in a fixed order
                for name, g in layer.grads.items():
                    for twin in nets[1:]:
                        g += twin.layers[i].grads[name]
            optimizer.step()
        return loss, sum(result[1] for result in results)
