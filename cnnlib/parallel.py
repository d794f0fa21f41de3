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

Most layers treat each sample on its own in training and say so
(``layer.per_sample``). Two kinds do not, and are split all the same:

* batch norm (its statistics are over the whole batch): the parts exchange
  their sums through the layer's ``gather_parts`` hook, once per pass, so
  every part normalises with the statistics of the whole batch, as
  synchronised batch norm does; the result equals train_step's up to float
  rounding;
* dropout (one random stream): each part draws its masks from its own
  generator, seeded from the layer's ``rng``, so a run is reproducible from
  the seed (the masks differ from an unsplit step's, their distribution not).

Any other layer that is not per-sample is refused.
"""
import copy
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor, wait

import numpy as np

__all__ = ["ParallelStep", "auto_step", "training_flops", "usable_cores"]


def usable_cores():
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                      # macOS, Windows
        return max(1, os.cpu_count() or 1)


# A split step pays a fixed cost: waking the other threads, waiting for the
# slower part, adding the gradients, and two waits per batch-norm layer, where
# the parts exchange their sums. Half of a small step saves less than that.
# Measured with benchmarks/bench_auto_step.py on 2 idle cores (its README has
# the table): split steps of 28-81 MFLOP ran 0.87-1.05x the speed of one
# thread, steps of 110-437 MFLOP without batch norm 1.17-1.62x; a 10-layer MLP
# with 9 batch norms 0.83x at 437 MFLOP and 1.10x at 1,118.
SPLIT_MIN_FLOPS = 100e6
SPLIT_FLOPS_PER_BATCH_NORM = 50e6


def training_flops(net, batch):
    """Multiply-adds x 2 of one training step of ``net`` on ``batch`` (its
    first sample and its length are used): the forward products of every
    convolution and dense layer, once more for the weight gradients and once
    more for the input gradients, except for a first layer that skips its
    input gradient (``input_grad=False``). An estimate of the GEMM work:
    elementwise layers count nothing. Runs the first sample forward, in
    inference mode, to learn the shapes."""
    x, flops = batch[:1], 0.0
    for position, layer in enumerate(net.layers):
        out = layer.forward(x, training=False)
        w = getattr(layer, "params", {}).get("W")
        if w is not None:
            # a convolution's products: one per output pixel, and a fused layer
            # computes size x size of them per pooled pixel
            pool = getattr(getattr(layer, "pool", None), "size", 1)
            pixels = int(np.prod(out.shape[2:])) * pool * pool if w.ndim == 4 else 1
            forward = 2.0 * w.size * pixels
            skips_dx = position == 0 and not getattr(getattr(layer, "conv", layer), "input_grad", True)
            flops += forward * (2 if skips_dx else 3)
        x = out
    return flops * len(batch)


def auto_step(cores=None, net=None, batch=None):
    """The training step ``cnnlib.train.fit`` uses by default.

    On two or more cores a ParallelStep with one thread per core (one BLAS
    thread each), if the step has enough work to pay for the threads: at
    least SPLIT_MIN_FLOPS (training_flops of ``net`` on ``batch``), plus
    SPLIT_FLOPS_PER_BATCH_NORM for every batch-norm layer. A smaller step
    runs whole on one thread, with one BLAS thread (``ParallelStep(1)``).
    On one core, or without ``net`` and ``batch``, nothing is counted: the
    plain train_step on one core, the split step on more.

    Why these choices, measured on 2 cores (README.md, Performance): the
    split batch was the fastest choice for large steps on idle cores and lost
    least when another program took a core; several BLAS threads per step
    slowed down badly then (one thread on one core was faster still)."""
    from .train import train_step  # train imports this module
    cores = usable_cores() if cores is None else cores
    if cores < 2:
        return train_step
    if net is not None and batch is not None:
        exchanges = sum(hasattr(layer, "gather_parts") for layer in net.layers)
        if training_flops(net, batch) < SPLIT_MIN_FLOPS + SPLIT_FLOPS_PER_BATCH_NORM * exchanges:
            return ParallelStep(1)
    return ParallelStep(cores)


class ParallelStep:
    """``step(net, loss_fn, optimizer, xb, yb) -> (loss, number correct)``,
    like train_step, with the batch split over ``threads`` threads.

    From its first step until ``close()`` BLAS runs ``blas_threads`` threads
    per call, process-wide (switching it back and forth at every step wakes
    BLAS's own worker threads, which then spin and steal the cores). The
    worker threads stop and the BLAS setting is restored by ``close()``, by
    leaving a ``with`` block, or when the object is garbage-collected.
    """

    def __init__(self, threads=2, blas_threads=1):
        for name, value in (("threads", threads), ("blas_threads", blas_threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ParallelStep: {name} must be a positive integer, got {value!r}")
        self.threads, self.blas_threads = threads, blas_threads
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self._blas = {"limits": None}
        self._finalizer = weakref.finalize(self, ParallelStep._shutdown, self._pool, self._blas)

    def __repr__(self):
        return f"ParallelStep(threads={self.threads}, blas_threads={self.blas_threads})"

    @staticmethod
    def _shutdown(pool, blas):
        if blas["limits"] is not None:
            blas["limits"].restore_original_limits()
            blas["limits"] = None
        if pool is not None:
            pool.shutdown()

    def close(self):
        """Stop the worker threads and restore BLAS's thread count."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _limit_blas(self):
        if self._blas["limits"] is None:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError as err:
                raise ImportError("ParallelStep limits BLAS threads with threadpoolctl: "
                                  "python -m pip install threadpoolctl") from err
            self._blas["limits"] = threadpool_limits(limits=self.blas_threads, user_api="blas")

    @staticmethod
    def _replica(net):
        """A copy of net whose layers share the parameter dicts but nothing else
        (batch-norm running statistics are updated by the original only)."""
        twin = copy.copy(net)
        twin.layers = [copy.copy(layer) for layer in net.layers]
        for layer in twin.layers:
            layer.grads, layer.cache = {}, None
            if hasattr(layer, "buffers"):
                layer.buffers = {name: b.copy() for name, b in layer.buffers.items()}
        return twin

    @staticmethod
    def _split_layers(nets):
        """Connect the parts' copies of every layer that is not per-sample:
        batch norm through a _Gather, dropout through generators of its own.
        Returns the gathers (to break their barriers if a part fails)."""
        gathers = []
        for position, layer in enumerate(nets[0].layers):
            if layer.per_sample:
                continue
            if hasattr(layer, "gather_parts"):
                gather = _Gather(len(nets))
                gathers.append(gather)
                for part, net in enumerate(nets):
                    net.layers[position].gather_parts = gather.for_part(part)
            elif isinstance(getattr(layer, "rng", None), np.random.Generator):
                seeds = layer.rng.integers(2**63, size=len(nets) - 1)   # drawn in a fixed order
                for net, seed in zip(nets[1:], seeds):
                    net.layers[position].rng = np.random.default_rng(seed)
            else:
                raise ValueError(f"ParallelStep: {layer!r} does not treat each sample on its own "
                                 "in training and offers no way to split it; train this network "
                                 "with cnnlib.train.train_step")
        return gathers

    @staticmethod
    def _run(net, loss_fn, xb, yb, share, gathers):
        try:
            logits = net.forward(xb, training=True)
            loss = loss_fn.forward(logits, yb)
            # The loss is the mean over this part; scaled by the part's share of
            # the batch, the gradients just add up to those of the whole batch.
            dlogits = loss_fn.backward()
            net.backward(dlogits * dlogits.dtype.type(share))
        except BaseException:
            for gather in gathers:                  # no part may wait for this one forever
                gather.barrier.abort()
            raise
        return loss, int((logits.argmax(axis=1) == yb).sum())

    def __call__(self, net, loss_fn, optimizer, xb, yb):
        if not self._finalizer.alive:
            raise RuntimeError("ParallelStep: this step was closed; make a new one")
        if len(xb) != len(yb):
            raise ValueError(f"ParallelStep: xb has {len(xb)} samples but yb has {len(yb)}")
        k = min(self.threads, len(xb))
        if k == 1:                            # nothing to split: the plain step, BLAS limited
            from .train import train_step  # train imports this module
            self._limit_blas()
            return train_step(net, loss_fn, optimizer, xb, yb)
        bounds = [len(xb) * i // k for i in range(k + 1)]     # fixed parts, as equal as possible
        parts = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        shares = [(b - a) / len(xb) for a, b in zip(bounds, bounds[1:])]
        nets = [net] + [self._replica(net) for _ in parts[1:]]
        gathers = self._split_layers(nets)
        self._limit_blas()
        try:
            loss_fns = [loss_fn] + [copy.copy(loss_fn) for _ in parts[1:]]
            jobs = [self._pool.submit(self._run, nets[i], loss_fns[i], xb[parts[i]], yb[parts[i]],
                                      shares[i], gathers) for i in range(1, k)]
            try:
                results = [self._run(net, loss_fn, xb[parts[0]], yb[parts[0]], shares[0], gathers)]
            except threading.BrokenBarrierError:
                wait(jobs)                    # another part failed first: raise its error
                for job in jobs:
                    if job.exception() and not isinstance(job.exception(), threading.BrokenBarrierError):
                        raise job.exception() from None
                raise
            finally:
                wait(jobs)                    # every part ends before anything else happens
            results += [job.result() for job in jobs]     # re-raises a part's error
        finally:
            for layer in net.layers:              # the original is plain again
                if hasattr(layer, "gather_parts"):
                    layer.gather_parts = None
        loss = sum(share * result[0] for share, result in zip(shares, results))
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss}; the weights were not updated "
                                     "(try a lower learning rate)")
        for i, layer in enumerate(net.layers):            # the sum, in a fixed order
            for name, g in layer.grads.items():
                for twin in nets[1:]:
                    g += twin.layers[i].grads[name]
        optimizer.step()
        return loss, sum(result[1] for result in results)


class _Gather:
    """Gives every part of a split batch the arrays of all parts, in part
    order: an all-gather between threads, with one barrier.

    Calls alternate between two sets of slots: a part can only write the set
    of call k + 2 after every part has reached call k + 1, and so has finished
    reading the set of call k."""

    def __init__(self, parts):
        self.barrier = threading.Barrier(parts, timeout=600)
        self.slots = [[None] * parts, [None] * parts]
        self.calls = [0] * parts

    def for_part(self, part):
        return lambda value: self.gather(part, value)

    def gather(self, part, value):
        slots = self.slots[self.calls[part] % 2]
        self.calls[part] += 1
        slots[part] = value
        self.barrier.wait()                       # every part has put its array
        return list(slots)
