"""Data parallelism: one training step, the batch split over threads or processes.

``ParallelStep(threads)`` and ``ProcessStep(processes)`` are drop-ins for
``cnnlib.train.train_step``::

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

``ProcessStep`` splits the batch the same way, with the same parts, shares
and dropout seeds, so its numbers are ParallelStep's bit for bit; but every
part after the first runs in a worker process of its own, forked at the
first step, so no part waits for another's Python code (the GIL). The
weights live in memory shared with the workers; each worker hands back its
gradients through shared memory too, layer by layer as its backward pass
finishes them, so that they are added while it computes the layers before;
a batch norm's exchange goes through
slots in shared memory, the parts meeting through pipes. Linux only (it needs
``fork``). While another program keeps a core busy, a ProcessStep runs the
parts of a network without batch norm one after another, on one core
(ProcessStep's docstring says when).
"""
import copy
import gc
import math
import mmap
import os
import pickle
import signal
import struct
import sys
import threading
import time
import traceback
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor, wait
from time import perf_counter

import numpy as np

__all__ = ["ParallelStep", "ProcessStep", "auto_step", "split_step", "split_threshold",
           "training_flops", "usable_cores", "can_fork"]


def can_fork():
    """Whether ProcessStep can run here: Linux, where ``os.fork`` is safe with
    NumPy and its BLAS (macOS has fork, but its system libraries are not safe
    to use in a forked child)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork")


def usable_cores():
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                      # macOS, Windows
        return max(1, os.cpu_count() or 1)


# A split step pays a cost per step that one thread does not: waking the
# workers and waiting for the slower part; in processes, also copying each
# worker's gradients into shared memory and adding them here, a cost per
# parameter; in threads, waiting for the GIL; and two waits per batch-norm
# layer, where the parts exchange their sums. Half of a small step saves
# less than that. split_threshold turns the cost into the FLOPs
# (training_flops) a step must have to be split. Fitted to five runs of
# benchmarks/bench_auto_step.py on 2 idle cores in processes (its README has
# the table): 13,600 parameters split from 14 MFLOP (the 8-filter net at batch
# 50, 1.09-1.23x), 434,000 (SimpleConvNet) from about 100 MFLOP (batch 24,
# 1.13-1.27x; batch 16, 69 MFLOP, 0.81-1.05x). The threads' numbers were set
# the same way, before the processes, and have no parameter term.
SPLIT_MIN_FLOPS = 10e6                  # in processes
SPLIT_FLOPS_PER_PARAMETER = 200         # in processes
THREAD_SPLIT_MIN_FLOPS = 100e6          # in threads
SPLIT_FLOPS_PER_BATCH_NORM = 50e6       # either way


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


def split_threshold(net, processes=None):
    """The training_flops a step of ``net`` must reach for auto_step to split
    it: split in processes (``processes=True``; by default where
    ``can_fork()``), SPLIT_MIN_FLOPS plus SPLIT_FLOPS_PER_PARAMETER for every
    number in the layers' ``params``; in threads, THREAD_SPLIT_MIN_FLOPS;
    plus SPLIT_FLOPS_PER_BATCH_NORM for every batch-norm layer either way."""
    processes = can_fork() if processes is None else processes
    layers = net.layers
    batch_norms = sum(hasattr(layer, "gather_parts") for layer in layers)
    if processes:
        parameters = sum(p.size for layer in layers for p in layer.params.values())
        base = SPLIT_MIN_FLOPS + SPLIT_FLOPS_PER_PARAMETER * parameters
    else:
        base = THREAD_SPLIT_MIN_FLOPS
    return base + SPLIT_FLOPS_PER_BATCH_NORM * batch_norms


def auto_step(cores=None, net=None, batch=None):
    """The training step ``cnnlib.train.fit`` uses by default.

    On two or more cores the batch split over the cores, one part per core
    (one BLAS thread each), if the step has enough work to pay for the split:
    training_flops of ``net`` on ``batch`` at least split_threshold(net). The
    parts run in processes (``ProcessStep``) where ``can_fork()``, else in
    threads (``ParallelStep``); the numbers are the same either way. A
    smaller step runs whole on one thread, with one BLAS thread
    (``ParallelStep(1)``). On one core, or without ``net`` and ``batch``,
    nothing is counted: the plain train_step on one core, the split step in
    threads on more.

    Why these choices, measured on 2 cores (README.md, Performance): the
    split batch was the fastest choice for large steps on idle cores and lost
    least when another program took a core (and ProcessStep then goes back to
    one core, for networks without batch norm); several BLAS threads per step
    slowed down badly then (one thread on one core was faster still); worker
    processes beat threads by the time the parts spent waiting for the GIL."""
    from .train import train_step  # train imports this module
    cores = usable_cores() if cores is None else cores
    if cores < 2:
        return train_step
    if net is not None and batch is not None:
        if training_flops(net, batch) < split_threshold(net):
            return ParallelStep(1)
        return split_step(cores)
    return ParallelStep(cores)


def split_step(cores):
    """The batch split over ``cores`` parts, as auto_step splits it: a
    ProcessStep where ``can_fork()``, else a ParallelStep."""
    return ProcessStep(cores) if can_fork() else ParallelStep(cores)


def _run_part(net, loss_fn, xb, yb, share, layer_done=None):
    """Forward and backward of one part of a split batch: (loss, number correct).
    ``layer_done(layer)``, if given, is called after each layer's backward."""
    logits = net.forward(xb, training=True)
    loss = loss_fn.forward(logits, yb)
    # The loss is the mean over this part; scaled by the part's share of the
    # batch, the gradients just add up to those of the whole batch.
    dlogits = loss_fn.backward()
    dout = dlogits * dlogits.dtype.type(share)
    if layer_done is None:
        net.backward(dout)
    else:
        for layer in reversed(net.layers):        # net.backward, one layer at a time
            dout = layer.backward(dout)
            layer_done(layer)
    return loss, int((logits.argmax(axis=1) == yb).sum())


def _parts(n, k):
    """k fixed parts of a batch of n, as equal as possible: (slices, shares)."""
    bounds = [n * i // k for i in range(k + 1)]
    return ([slice(a, b) for a, b in zip(bounds, bounds[1:])],
            [(b - a) / n for a, b in zip(bounds, bounds[1:])])


def _limit_blas(blas, threads):
    """Limit BLAS to ``threads`` threads per call, once, until blas["limits"] is restored."""
    if blas["limits"] is None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError as err:
            raise ImportError("the split step limits BLAS threads with threadpoolctl: "
                              "python -m pip install threadpoolctl") from err
        blas["limits"] = threadpool_limits(limits=threads, user_api="blas")


def _check_batch(who, xb, yb):
    if len(xb) != len(yb):
        raise ValueError(f"{who}: xb has {len(xb)} samples but yb has {len(yb)}")


class _SplitStep:
    """What ParallelStep and ProcessStep share: a step object that holds
    workers and a BLAS limit until ``close()`` (or the end of a ``with``
    block, or garbage collection: ``self._finalizer``)."""

    def close(self):
        """Stop the workers and undo what the step set up (BLAS's thread count;
        for ProcessStep, the weights' move into shared memory)."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_open(self):
        if not self._finalizer.alive:
            raise RuntimeError(f"{type(self).__name__}: this step was closed; make a new one")


class ParallelStep(_SplitStep):
    """``step(net, loss_fn, optimizer, xb, yb) -> (loss, number correct)``,
    like train_step, with the batch split over ``threads`` threads.

    From its first step until ``close()`` BLAS runs ``blas_threads`` threads
    per call, process-wide (switching it back and forth at every step wakes
    BLAS's own worker threads, which then spin and steal the cores). The
    worker threads stop and the BLAS setting is restored by ``close()``, by
    leaving a ``with`` block, or when the object is garbage-collected.
    """

    _one_after_another = False       # _PartsOnOneCore: the parts on this thread, one after another

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

    def _limit_blas(self):
        _limit_blas(self._blas, self.blas_threads)

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
            return _run_part(net, loss_fn, xb, yb, share)
        except BaseException:
            for gather in gathers:                  # no part may wait for this one forever
                gather.barrier.abort()
            raise

    def __call__(self, net, loss_fn, optimizer, xb, yb):
        self._check_open()
        _check_batch("ParallelStep", xb, yb)
        k = min(self.threads, len(xb))
        if k == 1:                            # nothing to split: the plain step, BLAS limited
            from .train import train_step  # train imports this module
            self._limit_blas()
            return train_step(net, loss_fn, optimizer, xb, yb)
        parts, shares = _parts(len(xb), k)
        nets = [net] + [self._replica(net) for _ in parts[1:]]
        gathers = self._split_layers(nets)
        self._limit_blas()
        try:
            loss_fns = [loss_fn] + [copy.copy(loss_fn) for _ in parts[1:]]
            if self._one_after_another:
                if gathers:                  # a part would wait at the exchange for one not yet run
                    raise ValueError("ParallelStep: parts run one after another cannot meet at a batch-norm exchange")
                results = [_run_part(nets[i], loss_fns[i], xb[parts[i]], yb[parts[i]], shares[i])
                           for i in range(k)]
            else:
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


class ProcessStep(_SplitStep):
    """``step(net, loss_fn, optimizer, xb, yb) -> (loss, number correct)``,
    like train_step, with the batch split over ``processes`` processes: this
    one runs the first part, forked worker processes the others.

    The parts, their shares and the dropout seeds are ParallelStep's, and
    each part computes what a ParallelStep thread does, so the numbers match
    ParallelStep(processes) bit for bit. What differs is that the parts share
    no interpreter: a thread of a ParallelStep runs Python only while it holds
    the GIL, and waits for it while the other thread runs Python between
    NumPy calls; a process never waits.

    How a step goes. At the first step the weights are moved into memory
    shared with the workers (each ``layer.params[name]`` becomes a view of
    it), and the workers are forked: each holds a copy of the network, the
    loss and everything else, its weights in the shared memory. Then at every
    step this process copies each worker's part of the batch into shared
    memory and tells the worker to go (its part's length and share and the
    number of parts, 24 bytes through a pipe), and runs its own part. A
    worker hands over each layer's gradients as soon as its backward pass has
    finished that layer: it copies them into shared memory and writes a byte
    to this process. Once its own part is done, this process adds them to its
    own, layer by layer in the order they come and in part order, while the
    workers are still busy with the layers before (the overlap of
    communication with the backward pass that PyTorch's
    DistributedDataParallel makes too). Then the optimizer updates the shared
    weights in place, where the workers see them.

    Batch norm: each part writes its sums into its slot of shared memory
    (two sets of slots, used in turn, as ParallelStep's _Gather does), then
    the parts meet: each worker writes a byte to this process and waits for
    one back, which this process sends once all have arrived. Every part then
    reads all slots, in part order. Running statistics are this process's
    layers' own, updated with the whole batch's statistics.

    So change the network or the loss only between steps of different
    ProcessSteps (fit makes one per call); a layer's weights may be replaced
    (``layer.params[name] = ...``) between steps: the workers are forked anew.
    ``close()`` (also leaving a ``with`` block, or garbage collection) stops
    the workers, moves the weights back into the arrays they started in and
    restores BLAS's thread count. An error in a worker is raised here; an
    interrupt (Ctrl-C) stops the workers, and the next step starts new ones,
    as after any error in a network with batch norm. Linux only
    (``can_fork()``).

    When another program keeps a core busy, the parts share the cores with
    it, and a split step is slower than one core. So, for a network without
    batch norm, the step watches how long its parts wait for a CPU
    (_CoreWatch), and while they get too little of the cores it runs the
    parts in turn, one after another in this process: the same parts,
    shares and dropout seeds, so the same numbers bit for bit
    (``steps_on_one_core`` counts these steps). With batch norm it always
    splits: parts that meet at every exchange cannot run one after another.
    """

    def __init__(self, processes=2, blas_threads=1):
        for name, value in (("processes", processes), ("blas_threads", blas_threads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProcessStep: {name} must be a positive integer, got {value!r}")
        if not can_fork():
            raise OSError(f"ProcessStep needs Linux (os.fork), this is {sys.platform}; "
                          "use ParallelStep, which splits the batch over threads")
        self.processes, self.blas_threads = processes, blas_threads
        self.steps_on_one_core = 0
        self._watch = _CoreWatch()
        self._state = {"limits": None, "team": None, "one_core": None}
        self._finalizer = weakref.finalize(self, ProcessStep._shutdown, self._state)

    def __repr__(self):
        return f"ProcessStep(processes={self.processes}, blas_threads={self.blas_threads})"

    @property
    def worker_pids(self):
        """Process ids of the running worker processes: none before the first
        split step, after ``close()``, or after an error that stopped them."""
        team = self._state["team"]
        return [] if team is None else [worker["pid"] for worker in team.workers]

    @staticmethod
    def _shutdown(state):
        if state["one_core"] is not None:
            state["one_core"].close()
            state["one_core"] = None
        if state["team"] is not None:
            state["team"].stop()
            state["team"] = None
        if state["limits"] is not None:
            state["limits"].restore_original_limits()
            state["limits"] = None

    def _team_for(self, net, loss_fn, xb, yb):
        """The workers for this network, loss and kind of batch: the running
        team if it still fits, else a new one."""
        team = self._state["team"]
        if team is not None and not team.fits(net, loss_fn, xb, yb):
            team.stop()
            team = self._state["team"] = None
        if team is None:
            _limit_blas(self._state, self.blas_threads)     # before the fork: the workers inherit it
            team = self._state["team"] = _Team(net, loss_fn, xb, yb, self.processes - 1)
        return team

    def __call__(self, net, loss_fn, optimizer, xb, yb):
        self._check_open()
        _check_batch("ProcessStep", xb, yb)
        k = min(self.processes, len(xb))
        if k == 1:                            # nothing to split: the plain step, BLAS limited
            from .train import train_step  # train imports this module
            _limit_blas(self._state, self.blas_threads)
            return train_step(net, loss_fn, optimizer, xb, yb)
        if not any(hasattr(layer, "gather_parts") for layer in net.layers) and not self._watch.split_next():
            if self._state["one_core"] is None:
                _limit_blas(self._state, self.blas_threads)
                self._state["one_core"] = _PartsOnOneCore(self.processes, self.blas_threads)
            self.steps_on_one_core += 1
            return self._state["one_core"](net, loss_fn, optimizer, xb, yb)
        parts, shares = _parts(len(xb), k)
        team = self._team_for(net, loss_fn, xb, yb)
        start = perf_counter()
        try:
            results = team.run(net, loss_fn, xb, yb, parts, shares)
        except BaseException as err:
            if team.broken or not isinstance(err, Exception):     # an interrupt, a lost worker
                self._state["team"] = None
                team.stop()
            raise
        if team.cpu_time is not None and not team.exchanges:     # batch norm: always split
            self._watch.record(len(parts), perf_counter() - start, *team.cpu_time)
        loss = sum(share * result[0] for share, result in zip(shares, results))
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss}; the weights were not updated "
                                     "(try a lower learning rate)")
        optimizer.step()
        return loss, sum(result[1] for result in results)


class _PartsOnOneCore(ParallelStep):
    """ParallelStep's parts, one after another on this thread: its numbers,
    on one core. For networks without batch norm (no exchange to meet at)."""
    _one_after_another = True


class _CoreWatch:
    """Whether a ProcessStep's next step splits, or runs its parts one after
    another on one core.

    On idle cores a split step gets a core per part. When another program
    keeps a core busy, the parts and that program share the cores, and each
    part waits in the kernel's run queue for a CPU. Measured with
    benchmarks/bench_busy_core.py on two cores, SimpleConvNet's parts beside
    a Python loop busy for a share of every 20 ms:

        loop busy           0     25 %   50 %   75 %   90 %   100 %
        parts got (cores)   1.96  1.60   1.47   1.27   1.20   1.14
        split / one thread  1.54  1.24   1.14   0.96   0.90   0.87

    (cores: 2 x the share of the time they wanted a CPU that the parts ran
    rather than waited; benchmarks/README.md has the whole table.) Below
    about 1.3 cores a split step was slower than one thread. So the
    split steps are judged in windows of at least WINDOW_SECONDS: the cores
    their parts got, from how long they ran and waited. After BUSY_WINDOWS
    windows in a row with fewer than MIN_CORES, ONE_CORE_SECONDS of steps
    (at the speed of the last window) run on one core; then the step splits
    again and judges anew. Windows last a while because loads come in
    bursts, and because after a pause of a second or more the operating
    system may run both parts on one core for two or three steps."""
    WINDOW_SECONDS, BUSY_WINDOWS, MIN_CORES, ONE_CORE_SECONDS = 0.25, 2, 1.3, 5.0

    def __init__(self):
        self.one_core_left = self.busy_windows = 0
        self._clear()

    def _clear(self):
        self.steps, self.seconds, self.cores, self.ran, self.waited = 0, 0.0, 0.0, 0, 0

    def split_next(self):
        if self.one_core_left:
            self.one_core_left -= 1
            return False
        return True

    def record(self, parts, seconds, ran, waited):
        """One split step of ``parts`` parts, which took ``seconds``; its
        processes ran ``ran`` and waited ``waited`` nanoseconds meanwhile."""
        self.steps += 1
        self.seconds += seconds
        self.cores += parts * seconds
        self.ran += ran
        self.waited += waited
        if self.seconds >= self.WINDOW_SECONDS:
            cores = self.cores / self.seconds * self.ran / max(self.ran + self.waited, 1)
            self.busy_windows = self.busy_windows + 1 if cores < self.MIN_CORES else 0
            if self.busy_windows == self.BUSY_WINDOWS:
                self.one_core_left = math.ceil(self.ONE_CORE_SECONDS * self.steps / self.seconds)
                self.busy_windows = 0
            self._clear()


# This thread's schedstat file, by native thread id (see _cpu_time).
_OWN_SCHEDSTAT = {}


def _open_schedstat(path):
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:                           # a kernel that keeps no scheduler statistics
        return None


def _cpu_time(fds):
    """(ns run on a CPU, ns waited for one while ready to run) so far, summed
    over the tasks whose /proc schedstat files are open at ``fds``; None if
    one cannot be read."""
    ran = waited = 0
    try:
        for fd in fds:
            fields = os.pread(fd, 64, 0).split()
            ran, waited = ran + int(fields[0]), waited + int(fields[1])
    except (OSError, TypeError, ValueError, IndexError):
        return None
    return ran, waited


# The pipe ends this process holds to talk to its workers, of every ProcessStep.
_PARENT_ENDS = set()


class _PartAborted(RuntimeError):
    """Raised in a part of a ProcessStep because another part failed first."""


def _exchange_bytes(layer):
    """Bytes one part's array may take in an exchange of ``layer``: a batch
    norm sends 1 + 2 x channels float64 numbers forward, 2 x channels back."""
    channels = getattr(layer, "channels", None)
    return 8 * (1 + 2 * channels) if channels else 1 << 20


def _shared_arrays(arrays):
    """Zeroed arrays like ``arrays`` (shape, dtype) in one block of memory
    shared with processes forked later (an anonymous shared mapping)."""
    sizes = [(int(np.prod(shape)), np.dtype(dtype)) for shape, dtype in arrays]
    starts, end = [], 0
    for count, dtype in sizes:
        starts.append(end)
        end += -(-count * dtype.itemsize // 64) * 64             # each array on its own cache lines
    block = mmap.mmap(-1, max(end, 1))
    return [np.frombuffer(block, dtype, count, start).reshape(shape)
            for (shape, _), (count, dtype), start in zip(arrays, sizes, starts)]


def _read(fd, n):
    """Exactly n bytes from a pipe, or fewer if the other end closed it."""
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class _Team:
    """The worker processes of a ProcessStep, and the memory they share with it."""

    def __init__(self, net, loss_fn, xb, yb, workers):
        self.net, self.loss_fn, self.layers = net, loss_fn, list(net.layers)
        self.sample, self.capacity = (xb.shape[1:], xb.dtype, yb.dtype), -(-len(xb) // 2)
        self.dropouts, self.exchanges = [], []
        for layer in net.layers:
            if hasattr(layer, "gather_parts"):
                self.exchanges.append(layer)
            elif not layer.per_sample:
                if not isinstance(getattr(layer, "rng", None), np.random.Generator):
                    raise ValueError(f"ProcessStep: {layer!r} does not treat each sample on its own "
                                     "in training and offers no way to split it; train this network "
                                     "with cnnlib.train.train_step")
                self.dropouts.append(layer)
        self.keys = [(layer, name) for layer in net.layers for name in layer.params]
        # the layers with weights, in the order a backward pass reaches them, with
        # their entries in keys: what a worker hands over, one layer at a time
        self.handed = [(layer, [i for i, (owner, _) in enumerate(self.keys) if owner is layer])
                       for layer in reversed(net.layers) if layer.params]
        self.own = [layer.params[name] for layer, name in self.keys]     # given back at stop()
        self.shared = _shared_arrays([(p.shape, p.dtype) for p in self.own])
        for (layer, name), own, shared in zip(self.keys, self.own, self.shared):
            shared[...] = own
            layer.params[name] = shared
        # every exchanging layer: two sets (calls alternate, as in _Gather) of
        # one slot per part, for the bytes of the array that part contributes
        parts = workers + 1
        self.slots = _shared_arrays([((2, parts, _exchange_bytes(layer)), np.uint8)
                                     for layer in self.exchanges])
        self.slot_sizes = _shared_arrays([((2, parts, 2), np.int64) for _ in self.exchanges])
        self.calls, self.parts_now = [0] * len(self.exchanges), 1
        self.broken, self.workers = False, []
        self.cpu_time = None              # of the last run, for _CoreWatch: (ns ran, ns waited)
        try:
            for _ in range(workers):
                self.workers.append(self._fork(net, loss_fn))
        except BaseException:
            self.stop()
            raise

    def fits(self, net, loss_fn, xb, yb):
        return (net is self.net and loss_fn is self.loss_fn and list(net.layers) == self.layers
                and (xb.shape[1:], xb.dtype, yb.dtype) == self.sample and len(xb) <= 2 * self.capacity
                and all(layer.params.get(name) is shared
                        for (layer, name), shared in zip(self.keys, self.shared)))

    def _fork(self, net, loss_fn):
        x_shape, x_dtype, y_dtype = self.sample
        worker = {"x": _shared_arrays([((self.capacity,) + x_shape, x_dtype)])[0],
                  "y": _shared_arrays([((self.capacity,), y_dtype)])[0],
                  "seeds": _shared_arrays([((len(self.dropouts),), np.int64)])[0],
                  "result": _shared_arrays([((2,), np.float64)])[0],
                  "grads": _shared_arrays([(p.shape, p.dtype) for p in self.shared])}
        go_read, go_write = os.pipe()
        done_read, done_write = os.pipe()
        unfreeze, pid = gc.get_freeze_count() == 0, None
        gc.freeze()                  # the child never collects (and finalises) the parent's garbage
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns that forking a process with threads may
                # deadlock a child that takes a lock another thread held; the
                # child runs only this network and NumPy, never prints
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        finally:
            if pid != 0 and unfreeze:
                gc.unfreeze()
        if pid == 0:                                          # the worker
            try:
                # every other worker's pipe ends: a worker must see its pipe
                # close when the parent closes it, so no other process may hold it
                for fd in _PARENT_ENDS | {go_write, done_read}:
                    os.close(fd)
                self._serve(net, loss_fn, worker, go_read, done_write)
            finally:
                os._exit(0)
        os.close(go_read)
        os.close(done_write)
        _PARENT_ENDS.update((go_write, done_read))
        worker.update(pid=pid, go=go_write, done=done_read,
                      schedstat=_open_schedstat(f"/proc/{pid}/schedstat"))
        return worker

    def _serve(self, net, loss_fn, worker, go, done):
        """The worker's loop: a part per message, until the pipe closes."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)          # an interrupt is the parent's to handle
        sys.stdout = sys.stderr = open(os.devnull, "w")       # the parent's streams may be Jupyter's
        warnings.simplefilter("ignore")
        part = len(self.workers) + 1              # this copy lists the workers forked before it
        handed = {id(layer): indices for layer, indices in self.handed}
        # A hand-over's byte waits while an exchange is still to come in the backward pass, and
        # goes with the byte saying the worker has arrived there: this process cannot add anything
        # before it has passed that exchange itself, and is not woken once more for it.
        exchange_to_come, seen = {}, False
        for layer in net.layers:
            exchange_to_come[id(layer)] = seen
            seen = seen or layer in self.exchanges
        held = [0]

        def say(byte):
            os.write(done, b"g" * held[0] + byte)
            held[0] = 0

        def hand_over(layer):             # this layer's gradients are final: to shared memory, say so
            if id(layer) in handed:
                for i in handed[id(layer)]:
                    worker["grads"][i][...] = layer.grads[self.keys[i][1]]
                held[0] += 1
                if not exchange_to_come[id(layer)]:
                    say(b"")

        for i, layer in enumerate(self.exchanges):
            layer.gather_parts = self._gather_for(i, part, lambda: self._meet_as_worker(say, go))

        while True:
            message = _read(go, 24)
            if len(message) < 24:
                return
            n, share, self.parts_now = struct.unpack("<qdq", message)
            held[0] = 0                   # none left over from a part that failed
            try:
                for layer, seed in zip(self.dropouts, worker["seeds"]):
                    layer.rng = np.random.default_rng(int(seed))
                loss, correct = _run_part(net, loss_fn, worker["x"][:n], worker["y"][:n], share,
                                          hand_over)
                worker["result"][:] = loss, correct
                say(b"k")
            except BaseException as err:
                err.add_note("(raised in a ProcessStep worker process:\n"
                             + "".join(traceback.format_tb(err.__traceback__)) + ")")
                try:
                    payload = pickle.dumps(err)
                except Exception:
                    payload = pickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))
                os.write(done, b"e" + struct.pack("<q", len(payload)) + payload)

    def run(self, net, loss_fn, xb, yb, parts, shares):
        """Every part's (loss, number correct), the workers' gradients added to this process's."""
        busy = self.workers[:len(parts) - 1]
        schedstats = [self._own_schedstat()] + [worker["schedstat"] for worker in busy]
        before = None if None in schedstats else _cpu_time(schedstats)
        for i, layer in enumerate(self.dropouts):             # drawn as ParallelStep draws them
            for worker, seed in zip(busy, layer.rng.integers(2**63, size=len(busy))):
                worker["seeds"][i] = seed
        for worker, part, share in zip(busy, parts[1:], shares[1:]):
            n = part.stop - part.start
            worker["x"][:n] = xb[part]
            worker["y"][:n] = yb[part]
            worker["handed"] = 0                              # layers whose gradients it handed over
            try:
                os.write(worker["go"], struct.pack("<qdq", n, share, len(parts)))
            except BrokenPipeError:
                raise self._lost(worker) from None
        self.parts_now = len(parts)
        for i, layer in enumerate(self.exchanges):
            layer.gather_parts = self._gather_for(i, 0, lambda: self._meet_as_hub(busy))
        own_error = None
        try:
            own = _run_part(net, loss_fn, xb[parts[0]], yb[parts[0]], shares[0])
            self._add_as_handed(busy)
        except BaseException as err:
            own_error = err
        finally:
            replies = [self._reply(worker) for worker in busy]   # every part ends first
            for layer in self.exchanges:                      # the original is plain again
                layer.gather_parts = None
        errors = [r for r in replies if isinstance(r, BaseException)]
        if (own_error or errors) and self.exchanges:
            self.broken = True                # the parts' exchange counts may differ now: new workers
        # a part's own error first; "another part failed" only if nothing else came
        causes = [e for e in [own_error] + errors if e is not None and not isinstance(e, _PartAborted)]
        if causes or own_error is not None:
            raise (causes or [own_error])[0]
        after = None if before is None else _cpu_time(schedstats)
        self.cpu_time = None if after is None else (after[0] - before[0], after[1] - before[1])
        return [own] + replies

    @staticmethod
    def _own_schedstat():
        """This thread's schedstat file (kept open: reading it then costs a microsecond)."""
        thread = threading.get_native_id()
        if thread not in _OWN_SCHEDSTAT:
            _OWN_SCHEDSTAT[thread] = _open_schedstat("/proc/thread-self/schedstat")
        return _OWN_SCHEDSTAT[thread]

    def _gather_for(self, i, part, meet):
        """The gather_parts function of exchanging layer i in part ``part``:
        put this part's array in its slot, meet the other parts, read all."""
        slots, sizes, codes = self.slots[i], self.slot_sizes[i], (np.float32, np.float64)

        def gather(value):
            value = np.ascontiguousarray(value)
            if value.dtype not in codes or value.nbytes > slots.shape[2]:
                raise ValueError(f"ProcessStep: {self.exchanges[i]!r} exchanged a {value.dtype} array "
                                 f"of {value.nbytes} bytes; its slot takes float32 or float64 and at "
                                 f"most {slots.shape[2]} bytes")
            s = self.calls[i] % 2
            self.calls[i] += 1
            slots[s, part, :value.nbytes] = value.reshape(-1).view(np.uint8)
            sizes[s, part] = value.nbytes, codes.index(value.dtype.type)
            meet()
            return [slots[s, q, :sizes[s, q, 0]].view(codes[sizes[s, q, 1]]).copy()
                    for q in range(self.parts_now)]
        return gather

    def _meet_as_worker(self, say, go):
        """A worker at an exchange: say it has arrived, wait for the hub to release it."""
        say(b"a")
        if _read(go, 1) != b"r":
            raise _PartAborted("ProcessStep: another part of the batch failed")

    def _add_as_handed(self, busy):
        """Add the workers' gradients to this process's, a layer as soon as every
        worker has handed it over (the workers meanwhile compute the layers
        before it); in part order, so the sums are ParallelStep's. If a worker
        fails instead, keep its error and fail this part too."""
        for k, (layer, indices) in enumerate(self.handed):
            for worker in busy:
                while worker["handed"] <= k:
                    status = _read(worker["done"], 1)
                    if status != b"g":
                        worker["reply"] = self._answer(worker, status)
                        raise _PartAborted("ProcessStep: another part of the batch failed")
                    worker["handed"] += 1
            for i in indices:
                grad = layer.grads[self.keys[i][1]]
                for worker in busy:
                    grad += worker["grads"][i]

    @staticmethod
    def _receive(worker):
        """The worker's next byte that is not a hand-over; the hand-overs
        before it (layers it finished first) are counted."""
        status = _read(worker["done"], 1)
        while status == b"g":
            worker["handed"] += 1
            status = _read(worker["done"], 1)
        return status

    def _meet_as_hub(self, busy):
        """This process at an exchange: wait until every worker has arrived,
        then release them all; if one failed instead, fail this part too."""
        failed = False
        for worker in busy:
            status = self._receive(worker)
            if status == b"a":
                worker["waiting"] = True
            else:
                worker["reply"] = self._answer(worker, status)
                failed = True
        if failed:
            raise _PartAborted("ProcessStep: another part of the batch failed")
        for worker in busy:
            os.write(worker["go"], b"r")
            worker["waiting"] = False

    def _reply(self, worker):
        """The worker's (loss, number correct), or its error; a worker still
        waiting at an exchange is released with an abort first."""
        if "reply" in worker:                                 # met at an exchange already
            return worker.pop("reply")
        while True:
            try:
                if worker.pop("waiting", False):
                    os.write(worker["go"], b"x")
                status = self._receive(worker)
            except BrokenPipeError:
                return self._lost(worker)
            if status != b"a":
                return self._answer(worker, status)
            worker["waiting"] = True

    def _answer(self, worker, status):
        if status == b"k":
            loss, correct = worker["result"]
            return float(loss), int(correct)
        if status == b"e":
            size, = struct.unpack("<q", _read(worker["done"], 8))
            return pickle.loads(_read(worker["done"], size))      # from our own child
        return self._lost(worker)

    def _lost(self, worker):
        self.broken = True
        return RuntimeError(f"ProcessStep: worker process {worker['pid']} ended unexpectedly "
                            "(killed, or out of memory?); the next step starts new workers")

    def stop(self):
        """End the workers and give the layers back their own weight arrays."""
        for worker in self.workers:
            os.close(worker["go"])                             # the worker reads the end of its pipe
            if self.broken:
                _kill(worker["pid"])
        for worker in self.workers:
            _reap(worker["pid"])
            os.close(worker["done"])
            _PARENT_ENDS.difference_update((worker["go"], worker["done"]))
            if worker["schedstat"] is not None:
                os.close(worker["schedstat"])
        self.workers = []
        for (layer, name), own, shared in zip(self.keys, self.own, self.shared):
            if layer.params.get(name) is shared:
                own[...] = shared
                layer.params[name] = own


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid, seconds=10.0):
    """Wait for a worker to exit (it finishes its part first), killing it after ``seconds``."""
    end = time.monotonic() + seconds
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > end:
            _kill(pid)
            end = float("inf")
        time.sleep(0.001)


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
