"""Training speed of cnnlib against the classic im2col network, loops and PyTorch.

    python benchmarks/bench_training.py                    # 1 and 2 threads, table
    python benchmarks/bench_training.py --threads 1 --quick
    python benchmarks/bench_training.py --plot benchmarks/speed.png --profile

Three networks, trained on batches of MNIST (float32, plain SGD):

* ``SimpleConvNet`` (notebook 07): conv 30x5x5 -> ReLU -> max-pool 2 ->
  dense 4320->100 -> ReLU -> dense 100->10, batch 100;
* ``8-filter net`` (notebooks 03 and 04): conv 8x3x3 -> max-pool 2 -> dense 1352->10,
  batch 100;
* ``deep CNN`` (notebook 08): conv32-ReLU-pool-BN, conv32-BN-ReLU,
  conv32-ReLU-pool-BN, dense 128, dense 10 (3x3 kernels, padding 1), batch 100;
  on the fast path the two conv-ReLU-pool blocks are fused layers and the middle
  conv uses the fast tier; no classic version (the book has no batch norm).

Implementations (rows of the table):

* ``loops``: cnnlib's ``impl="naive"`` textbook layers (8-filter net only, a batch of
  10 images: each step takes seconds);
* ``classic im2col``: ``classic.py``, the network of "Deep Learning from
  Scratch" (im2col/col2im for convolution *and* pooling, argmax pooling,
  boolean-mask ReLU, input gradient of the first layer computed), float32;
* ``cnnlib``: ``cnnlib.train.train_step`` on the fast path
  (``SimpleConvNet(fast=True)``: conv -> ReLU -> pool as one fused layer),
  BLAS with T threads;
* ``cnnlib default``: what ``cnnlib.train.fit`` does out of the box on T
  cores, ``cnnlib.parallel.auto_step(T, net, batch)``: train_step for T = 1;
  for T >= 2 the batch split into T parts with one BLAS thread each if the
  step has enough work to pay for the split (on Linux in processes,
  ProcessStep, and for all three networks at batch 100; elsewhere in threads,
  ParallelStep, where the 8-filter net's step is too small), else the whole
  batch on one thread with one BLAS thread (``parallel.split_threshold``;
  ``bench_auto_step.py`` measures it);
* ``PyTorch``: the same architecture in ``torch.nn`` (if torch is installed),
  ``torch.set_num_threads(T)``.

Method: for each network, every (thread count T, implementation) pair is a
turn: BLAS (threadpoolctl) and PyTorch limited to T threads, except that the
split step sets its own BLAS limit. Every turn takes a few warm-up steps;
then ``--reps`` rounds, each giving every turn in turn (the order rotates
every round) at least ``--steps`` timed steps and at least 0.05 s of them,
with a pause of ``--pause`` seconds after every change of library and after
every turn with more than one thread (idle worker threads of the library
that ran last keep spinning for a while and slow the next one).
Every turn starts with a tenth of a second of untimed steps, so each library
is timed in the steady state of a training loop: after its threads have
slept, Linux may wake a split step's second thread on the first one's core,
and it takes a few steps (tens of milliseconds) to move it; a training loop
meets that once, not every ten steps.
Images/s is the median over the rounds, with min-max. Ratios are paired:
the median over the rounds of the two turns' ratio in each round
(``paired_ratio``). The machine's speed drifts from second to second on a
shared host, and two turns of one round see nearly the same machine, so
this is steadier than a ratio of two medians (benchmarks/README.md has
the measurement).
GFLOP/s counts the multiply-adds the
network needs (no first-layer input gradient), and % peak compares them
with a float32 GEMM (2048^3) measured in the same run with T threads.
After the table, one line per network gives the gain of the out-of-the-box
step from T cores: "cnnlib default" on T threads over its speed on one,
paired round by round, with the quartiles over the rounds (``scaling``).
Like ``train.fit``, the run first calls ``cnnlib.fast.keep_freed_memory()``
(glibc keeps freed memory for the next step instead of faulting in fresh
pages): it is process-wide, so every library in the table runs with it.
Peak memory comes from tracemalloc (NumPy reports its allocations to it;
PyTorch's allocator does not, so there is no PyTorch figure).

``--profile`` adds cnnlib's per-layer times (``profile_layers``) and, when
the thread counts include 2, where the time of a step split over two cores
goes (``profile_split``: sharing memory and caches, the GIL, the split step's
own overhead).

Notebook 06 can import this file: ``run_benchmarks(...)`` returns the rows
as dicts, ``format_table(rows)`` and ``plot(rows, path)`` present them.
"""
import argparse
import contextlib
import gc
import itertools
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))                 # classic.py
if str(HERE.parent) not in sys.path:          # cnnlib, when it is not installed
    sys.path.append(str(HERE.parent))

from classic import ClassicNet  # noqa: E402

from cnnlib import datasets, fast, layers, losses, nets, optim, parallel, train  # noqa: E402

try:
    from threadpoolctl import threadpool_limits
except ImportError:                            # pragma: no cover
    threadpool_limits = None

try:
    import torch
except ImportError:                            # pragma: no cover
    torch = None

NETS = ("SimpleConvNet", "8-filter net", "deep CNN")
IMPLS = ("loops", "classic im2col", "cnnlib", "cnnlib default", "PyTorch")
LR = 0.01


# ---------------------------------------------------------------- networks ---
def build_cnnlib(name, impl="fast", seed=0):
    """The network with textbook layers on tier ``impl`` ("naive", "im2col"),
    or with ``impl="fast"`` the fast path (conv -> [ReLU ->] pool fused)."""
    if name == "SimpleConvNet":
        if impl == "fast":
            return nets.SimpleConvNet(seed=seed, fast=True)
        return nets.SimpleConvNet(seed=seed, fast=False, impl=impl)
    if name == "8-filter net":
        rng = np.random.default_rng(seed)
        tier = "im2col" if impl == "fast" else impl
        net = [layers.Conv2D(1, 8, 3, rng=rng, impl=tier, input_grad=False),
               layers.MaxPool2D(2, impl=tier), layers.Flatten(), layers.Dense(13 * 13 * 8, 10, rng=rng)]
        return nets.Sequential(fast.fuse_layers(net) if impl == "fast" else net)
    if name == "deep CNN":               # notebook 08: three conv layers with batch norm
        rng = np.random.default_rng(seed)
        tier = "im2col" if impl == "fast" else impl
        net = [layers.Conv2D(1, 32, 3, pad=1, rng=rng, impl=tier, input_grad=False), layers.ReLU(),
               layers.MaxPool2D(2, impl=tier), layers.BatchNorm2D(32),
               layers.Conv2D(32, 32, 3, pad=1, rng=rng, impl=impl), layers.BatchNorm2D(32), layers.ReLU(),
               layers.Conv2D(32, 32, 3, pad=1, rng=rng, impl=tier), layers.ReLU(),
               layers.MaxPool2D(2, impl=tier), layers.BatchNorm2D(32),
               layers.Flatten(), layers.Dense(32 * 7 * 7, 128, rng=rng), layers.ReLU(),
               layers.Dense(128, 10, rng=rng)]
        return nets.Sequential(fast.fuse_layers(net) if impl == "fast" else net)
    raise ValueError(f"unknown network {name!r}; expected one of {NETS}")


def flops_per_image(name):
    """Multiply-adds x 2 of one training image: forward, weight gradients,
    input gradients of every layer but the first."""
    if name == "SimpleConvNet":
        conv, dense1, dense2 = 30 * 25 * 24 * 24, 4320 * 100, 100 * 10
        return 2 * (2 * conv + 3 * dense1 + 3 * dense2)
    if name == "deep CNN":
        first = 32 * 9 * 28 * 28
        rest = 2 * 32 * 32 * 9 * 14 * 14 + 1568 * 128 + 128 * 10
        return 2 * (2 * first + 3 * rest)
    conv, dense = 8 * 9 * 26 * 26, 1352 * 10
    return 2 * (2 * conv + 3 * dense)


def build_torch(name, net):
    """The same architecture and weights in PyTorch."""
    nn = torch.nn
    if name == "SimpleConvNet":
        model = nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(4320, 100), nn.ReLU(), nn.Linear(100, 10))
    elif name == "deep CNN":
        model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(32),
                              nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                              nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(32),
                              nn.Flatten(), nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1352, 10))
    ours = [layer for layer in net.textbook_layers() if layer.params]
    theirs = [m for m in model if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            if "gamma" in a.params:
                b.weight.copy_(torch.from_numpy(a.params["gamma"]))
                b.bias.copy_(torch.from_numpy(a.params["beta"]))
                continue
            W = a.params["W"]
            b.weight.copy_(torch.from_numpy(W if W.ndim == 4 else np.ascontiguousarray(W.T)))
            b.bias.copy_(torch.from_numpy(a.params["b"]))
    return model


# ------------------------------------------------------------------ steppers ---
def make_stepper(impl, name, X, y, batch, threads):
    """A function step(k) that trains on batch k (cycling through X), or None
    if the implementation does not apply."""
    n_batches = len(X) // batch

    def batch_of(k):
        k %= n_batches
        return X[k * batch:(k + 1) * batch], y[k * batch:(k + 1) * batch]

    if impl == "loops" and name != "8-filter net":
        return None
    if impl == "PyTorch":
        if torch is None:
            return None
        model = build_torch(name, build_cnnlib(name)).float()     # float32 whatever torch's default dtype
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        TX, Ty = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))

        def step(k):
            k %= n_batches
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(TX[k * batch:(k + 1) * batch]),
                                                     Ty[k * batch:(k + 1) * batch])
            loss.backward()
            opt.step()
        return step
    if impl == "classic im2col":
        if name == "deep CNN":               # the book's network has no batch norm
            return None
        classic = ClassicNet.from_cnnlib(build_cnnlib(name))
        return lambda k: classic.train_step(*batch_of(k), lr=LR)
    net = build_cnnlib(name, impl="naive" if impl == "loops" else "fast")
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, LR)
    if impl == "cnnlib default":        # what fit does out of the box on a machine with `threads` cores
        step_fn = parallel.auto_step(threads, net, X[:batch])
    elif impl == "cnnlib split":        # the batch split over `threads` threads, whatever its size
        step_fn = parallel.ParallelStep(threads)
    elif impl == "cnnlib processes":    # the batch split over `threads` processes, whatever its size
        step_fn = parallel.ProcessStep(threads)
    else:
        step_fn = train.train_step

    def step(k):
        step_fn(net, loss_fn, opt, *batch_of(k))
    step.close = getattr(step_fn, "close", lambda: None)      # a split step: threads or processes, BLAS limit
    return step


@contextlib.contextmanager
def _torch_threads(n):
    """PyTorch limited to n threads while active (nothing without PyTorch)."""
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Threads:
    """Limit BLAS to n threads (and PyTorch to n) while active."""

    def __init__(self, n, blas=None):
        self.n, self.blas = n, n if blas is None else blas

    def __enter__(self):
        self.limiter = threadpool_limits(self.blas, user_api="blas") if threadpool_limits else None
        self.torch = _torch_threads(self.n)
        self.torch.__enter__()
        return self

    def __exit__(self, *exc):
        if self.limiter is not None:
            self.limiter.restore_original_limits()
        self.torch.__exit__(*exc)


def _library(impl):
    return "torch" if impl == "PyTorch" else "numpy"


def measure_gemm_peak(threads, n=2048, reps=3):
    """Best float32 GEMM rate (GFLOP/s) of an n x n x n product with `threads` BLAS threads."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    with _Threads(threads):
        np.matmul(a, b, out=out)
        best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(reps))
    return 2 * n ** 3 / best / 1e9


def _timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def load_data():
    """10,000 MNIST images (cnnlib's shipped set, train and test) as float32 / 255."""
    (X_train, y_train), (X_test, y_test) = datasets.load_mnist()
    X = np.concatenate([X_train, X_test])[:, None].astype(np.float32) / np.float32(255)
    return X, np.concatenate([y_train, y_test])


def paired_ratio(a, b):
    """Median, first and third quartile of a[i] / b[i]: two implementations'
    images/s turn by turn in the same rounds. The machine's speed drifts from
    second to second (other programs, other virtual machines on the host);
    turns of the same round see nearly the same machine, so their ratio is
    steadier than the ratio of two medians taken over all rounds."""
    ratios = np.asarray(a, dtype=float) / np.asarray(b, dtype=float)
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3)}


def _blas_threads_for_turn(impl, threads):
    """The BLAS thread limit for one turn. A split step ("cnnlib default" on
    2 or more threads) limits BLAS to one thread per call from its first step
    until it is closed, process-wide; every other NumPy turn sets its own."""
    if threadpool_limits is None or (impl == "cnnlib default" and threads > 1):
        return contextlib.nullcontext()
    return threadpool_limits(threads, user_api="blas")


def run_benchmarks(nets_=NETS, impls=IMPLS, threads=(1, 2), steps=10, reps=9, warmup=3,
                   batch=100, loops_batch=10, loops_steps=1, pause=0.5, gemm_n=2048, data=None,
                   progress=None, settle_seconds=0.1, min_turn_seconds=0.05):
    """Time every (network, implementation, thread count); returns a list of
    row dicts: net, impl, threads, batch, steps (timed, in total), rates
    (images/s of each round), ips (median images/s), ips_min, ips_max,
    gflops, peak_gflops, pct_peak, vs_torch, vs_classic (paired_ratio medians
    against the same network and thread count; None without that row).

    For each network every (thread count, implementation) takes one turn per
    round, the order rotating from round to round, so every two rows of a
    network, also of different thread counts, are compared round by round."""
    X, y = load_data() if data is None else data
    fast.keep_freed_memory()                 # as fit does; process-wide, so for every library
    peaks = {T: measure_gemm_peak(T, n=gemm_n) for T in threads}
    rows = []
    for name in nets_:
        if progress:
            progress(f"{name} ...")
        turns = {}                           # (T, impl) -> (step, batch)
        for T in threads:
            for impl in impls:
                b = loops_batch if impl == "loops" else batch
                s = make_stepper(impl, name, X, y, b, T)
                if s is not None:
                    turns[T, impl] = (s, b)
        rates, timed_steps = _time_turns(turns, reps, steps, loops_steps, warmup, pause,
                                         settle_seconds, min_turn_seconds)
        for (T, impl), v in rates.items():
            med = statistics.median(v)
            gflops = med * flops_per_image(name) / 1e9
            vs = {other: paired_ratio(v, rates[T, other])["median"] if (T, other) in rates else None
                  for other in ("PyTorch", "classic im2col")}
            rows.append(dict(
                net=name, impl=impl, threads=T, batch=turns[T, impl][1], steps=timed_steps[T, impl],
                rates=list(v), ips=med, ips_min=min(v), ips_max=max(v),
                gflops=gflops, peak_gflops=peaks[T], pct_peak=100 * gflops / peaks[T],
                vs_torch=vs["PyTorch"], vs_classic=vs["classic im2col"]))
    rows.sort(key=lambda r: (r["threads"], NETS.index(r["net"]) if r["net"] in NETS else 0,
                             IMPLS.index(r["impl"]) if r["impl"] in IMPLS else 0))
    return rows


def _time_turns(turns, reps, steps, loops_steps, warmup, pause, settle_seconds, min_turn_seconds):
    """Warm up every turn of ``turns`` ({(T, impl): (step, batch)}), then time
    ``reps`` rounds of all of them, the order rotating. Returns
    ({(T, impl): images/s of each round}, {(T, impl): timed steps in total})
    and closes the steppers."""
    rates = {key: [] for key in turns}
    counters = {key: 0 for key in turns}
    timed_steps = {key: 0 for key in turns}
    last = None

    def run(key, n, timed):
        """n steps of one turn (if timed: after settle_seconds of untimed
        steps, and at least min_turn_seconds of them)."""
        nonlocal last
        (T, impl), (step, b) = key, turns[key]
        if last is not None and (_library(impl) != _library(last[1]) or last[0] > 1):
            time.sleep(pause)                # the last library's idle threads may still spin
        last = key
        with _torch_threads(T), _blas_threads_for_turn(impl, T):
            if timed and impl != "loops":    # untimed: back to the steady state (see docstring)
                settle = time.perf_counter() + settle_seconds
                while time.perf_counter() < settle:
                    step(counters[key])
                    counters[key] += 1
            start, done = time.perf_counter(), 0
            while done < n or (timed and time.perf_counter() - start < min_turn_seconds):
                step(counters[key])
                counters[key] += 1
                done += 1
            elapsed = time.perf_counter() - start
        if timed:
            rates[key].append(done * b / elapsed)
            timed_steps[key] += done

    for key in turns:                        # warm-up (loops: nothing to warm)
        run(key, 0 if key[1] == "loops" else warmup, False)
    order = list(turns)
    gc.collect()
    gc.disable()                             # no collector pauses inside the timed rounds
    try:
        for r in range(reps):
            for key in order[r % len(order):] + order[:r % len(order)]:
                run(key, loops_steps if key[1] == "loops" else steps, True)
    finally:
        gc.enable()
        for step, _ in turns.values():
            getattr(step, "close", lambda: None)()
    if last is not None and (_library(last[1]) == "torch" or last[0] > 1):
        time.sleep(pause)                    # leave a quiet machine to the next network
    return rates, timed_steps


# -------------------------------------------------------------------- memory ---
def measure_memory(name="SimpleConvNet", impls=("classic im2col", "cnnlib"), batch=100,
                   n_predict=10_000, predict_batch=1000, data=None):
    """Peak bytes allocated (tracemalloc) during one training step of `batch`
    images, and while predicting `n_predict` images in batches of
    `predict_batch`, beyond what was allocated before. Returns a list of dicts."""
    X, y = load_data() if data is None else data
    X_pred = np.resize(X, (n_predict,) + X.shape[1:])
    rows = []
    for impl in impls:
        step, predict = _memory_workload(impl, build_cnnlib(name), X, y, X_pred, batch, predict_batch)
        step()                                  # caches from a previous step exist in steady state
        rows.append(dict(net=name, impl=impl, train_step=_peak(step),
                         predict=_peak(predict), batch=batch, n_predict=n_predict,
                         predict_batch=predict_batch))
    return rows


def _memory_workload(impl, net, X, y, X_pred, batch, predict_batch):
    """(one training step, predicting X_pred) as functions of no arguments."""
    if impl == "classic im2col":
        classic = ClassicNet.from_cnnlib(net)

        def step():
            classic.train_step(X[:batch], y[:batch])

        def predict():
            return np.concatenate([classic.predict(X_pred[i:i + predict_batch]).argmax(1)
                                   for i in range(0, len(X_pred), predict_batch)])
        return step, predict
    if impl == "cnnlib":
        loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, LR)
        return (lambda: train.train_step(net, loss_fn, opt, X[:batch], y[:batch]),
                lambda: train.predict(net, X_pred, predict_batch))
    raise ValueError(f"memory is measured for 'classic im2col' and 'cnnlib', not {impl!r}")


def _peak(f):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    f()
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return peak


# ------------------------------------------------------------------- profile ---
def profile_layers(name="SimpleConvNet", threads=1, steps=30, batch=100, data=None):
    """Wall-clock ms per training step spent in each layer's forward and
    backward (cnnlib's fast path, the fused layer counted as one), plus the
    rest (loss, optimizer, Python). Returns a list of (label, ms)."""
    X, y = load_data() if data is None else data
    fast.keep_freed_memory()
    net = build_cnnlib(name)
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, LR)
    spent = {}

    def timed(label, f, *args):
        start = time.perf_counter()
        out = f(*args)
        spent[label] = spent.get(label, 0.0) + time.perf_counter() - start
        return out

    total = 0.0
    with _Threads(threads):
        n_batches = len(X) // batch
        for k in range(steps + 3):
            if k == 3:
                spent.clear()
                total = 0.0
            i = k % n_batches
            xb, yb = X[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
            start = time.perf_counter()
            a = xb
            for layer in net.layers:
                a = timed(f"forward  {layer!r}", layer.forward, a, True)
            loss_fn.forward(a, yb)
            d = loss_fn.backward()
            for layer in reversed(net.layers):
                d = timed(f"backward {layer!r}", layer.backward, d)
            opt.step()
            total += time.perf_counter() - start
    result = [(k, 1e3 * v / steps) for k, v in spent.items()]
    result.append(("loss, optimizer, Python", 1e3 * (total - sum(spent.values())) / steps))
    result.append(("total", 1e3 * total / steps))
    return result


# ------------------------------------------------- where a split step goes ---
def _stepper(impl, name, X, y, batch, threads):
    """make_stepper's step(k) as a step() that trains on the next batch at each call."""
    step_k, batches = make_stepper(impl, name, X, y, batch, threads), itertools.count()

    def step():
        step_k(next(batches))
    step.close = step_k.close
    return step


def _twin_process_main(name, batch):
    """A child process: half-batch steps on one BLAS thread, for ever (the
    parent pauses, resumes and ends it with signals)."""
    fast.keep_freed_memory()
    X, y = load_data()
    step = _stepper("cnnlib", name, X, y, batch, 1)
    with _Threads(1):
        for _ in range(3):
            step()
        print("ready", flush=True)
        while True:
            step()


class _TwinThread:
    """Half-batch steps on a network of its own in a second thread, while resumed."""

    def __init__(self, name, X, y, batch):
        self.step = _stepper("cnnlib", name, X, y, batch, 1)
        self.run, self.stop = threading.Event(), False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.run.wait() and not self.stop:
            self.step()

    def close(self):
        self.stop = True
        self.run.set()
        self.thread.join()


def profile_split(name="SimpleConvNet", batch=100, steps=30, rounds=5, data=None, settle_seconds=0.1):
    """Where the time of a step split over two cores goes (ProcessStep(2), what
    fit uses there on Linux, and ParallelStep(2), in threads).
    Milliseconds per step, medians over interleaved rounds, each turn after
    ``settle_seconds`` (at least two steps) of untimed steps, as in run_benchmarks:

    * whole: train_step on the whole batch, one thread, the other core idle;
    * half: train_step on half the batch, the other core idle;
    * half + process: the same while another process trains its own network on
      another half batch (they share memory bandwidth and caches);
    * half + thread: the same with a thread of this process instead (they also
      share the GIL: Python between NumPy calls runs one thread at a time);
    * split: ParallelStep(2) on the whole batch (+ splitting, waiting for the
      slower part, summing the gradients, the update);
    * processes: ProcessStep(2) on the whole batch (+ the same, and the copies
      through shared memory; no GIL shared); NaN without fork.

    The twin process is paused with SIGSTOP between its rounds, so this needs
    a POSIX system; elsewhere that row is NaN.
    """
    X, y = load_data() if data is None else data
    fast.keep_freed_memory()
    half = batch // 2
    whole_step, half_step = _stepper("cnnlib", name, X, y, batch, 1), _stepper("cnnlib", name, X, y, half, 1)
    split_step = _stepper("cnnlib split", name, X, y, batch, 2)          # ParallelStep(2)
    processes_step = _stepper("cnnlib processes", name, X, y, batch, 2) if parallel.can_fork() else None
    twin = _TwinThread(name, X, y, half)
    child = None
    if hasattr(signal, "SIGSTOP"):
        child = subprocess.Popen([sys.executable, __file__, "--twin-process", name, str(half)],
                                 stdout=subprocess.PIPE, text=True)
        if child.stdout.readline().strip() != "ready":          # it has warmed up
            child.kill()
            raise RuntimeError(f"profile_split: the twin process ended early (exit {child.wait()})")
        child.send_signal(signal.SIGSTOP)
    times = {k: [] for k in ("whole", "half", "half + process", "half + thread", "split", "processes")}

    def timed(key, step):
        settle = time.perf_counter() + settle_seconds      # untimed: the worker back on its own core
        for k in itertools.count():
            step()
            if k >= 1 and time.perf_counter() > settle:
                break
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times[key].append(1e3 * (time.perf_counter() - start) / steps)

    try:
        with _Threads(1):
            gc.collect()
            gc.disable()
            keys = list(times)
            for r in range(rounds):
                for key in keys[r % len(keys):] + keys[:r % len(keys)]:
                    if key == "processes":
                        if processes_step is not None:
                            timed(key, processes_step)
                    elif key == "half + process":
                        if child is None:
                            continue
                        child.send_signal(signal.SIGCONT)
                        time.sleep(0.05)
                        timed(key, half_step)
                        child.send_signal(signal.SIGSTOP)
                    elif key == "half + thread":
                        twin.run.set()
                        time.sleep(0.01)
                        timed(key, half_step)
                        twin.run.clear()
                    else:
                        timed(key, {"whole": whole_step, "half": half_step, "split": split_step}[key])
            gc.enable()
    finally:
        twin.close()
        split_step.close()
        if processes_step is not None:
            processes_step.close()
        if child is not None:
            child.kill()
            child.wait()
    return {k: statistics.median(v) if v else float("nan") for k, v in times.items()}


def format_split(name, ms, batch=100):
    half = batch // 2
    rows = [(f"one thread, whole batch of {batch}, other core idle", ms["whole"], None, ""),
            (f"one thread, half batch of {half}, other core idle", ms["half"], None, ""),
            ("half batch, a twin process on the other core", ms["half + process"],
             ms["half + process"] - ms["half"], "memory bandwidth, caches"),
            ("half batch, a twin thread on the other core", ms["half + thread"],
             ms["half + thread"] - ms["half + process"], "the GIL"),
            ("ParallelStep(2), whole batch", ms["split"], ms["split"] - ms["half + thread"],
             "split, wait for the slower part, sum, update")]
    if ms.get("processes") == ms.get("processes"):               # not NaN: timed
        rows.append(("ProcessStep(2), whole batch", ms["processes"], ms["processes"] - ms["half + process"],
                     "split, wait, copies, sum, update (no GIL)"))
    lines = [f"where a step split over 2 cores goes: {name}, batch {batch} = 2 x {half}, "
             "one BLAS thread per part, ms per step (medians):"]
    for label, value, extra, why in rows:
        lines.append(f"  {label:<50} {value:7.2f}" + (f"  {extra:+6.2f}  {why}" if extra is not None else ""))
    best = min(v for k, v in ms.items() if k in ("split", "processes") and v == v)
    lines.append(f"  2 cores / 1 core: {ms['whole'] / best:.2f}x, the faster split step "
                 f"(with nothing shared or serial: {ms['whole'] / ms['half']:.2f}x)")
    return "\n".join(lines)


# ------------------------------------------------------------------- output ---
def format_table(rows):
    lines = [f"{'network':<14} {'implementation':<20} {'T':>1} {'batch':>5} "
             f"{'images/s median [min-max]':>29} {'vs PyTorch':>10} {'vs classic':>10} "
             f"{'GFLOP/s':>8} {'% peak':>6}"]
    for r in rows:
        spread = f"{r['ips']:>9,.0f} [{r['ips_min']:,.0f}-{r['ips_max']:,.0f}]" if r["ips"] >= 100 else \
            f"{r['ips']:>9.1f} [{r['ips_min']:.1f}-{r['ips_max']:.1f}]"
        ratio = lambda v: "" if v is None else (f"{v:.2f}x" if v >= 0.01 else f"{v:.1e}x")  # noqa: E731
        lines.append(f"{r['net']:<14} {r['impl']:<20} {r['threads']:>1} {r['batch']:>5} {spread:>29} "
                     f"{ratio(r['vs_torch']):>10} {ratio(r['vs_classic']):>10} "
                     f"{r['gflops']:>8.1f} {r['pct_peak']:>5.1f}%")
    peaks = sorted({(r["threads"], r["peak_gflops"]) for r in rows})
    lines.append("float32 GEMM peak measured in this run: "
                 + ", ".join(f"{p:.0f} GFLOP/s with {t} thread{'s' * (t > 1)}" for t, p in peaks))
    return "\n".join(lines)


def scaling(rows):
    """{(network, T): paired_ratio of "cnnlib default" on T threads over
    "cnnlib default" on 1, round by round} for every T > 1 the rows have: how
    much the out-of-the-box step gains from T cores, within one run."""
    rates = {(r["net"], r["threads"]): r["rates"] for r in rows if r["impl"] == "cnnlib default"}
    return {(name, T): paired_ratio(v, rates[name, 1])
            for (name, T), v in rates.items() if T > 1 and (name, 1) in rates}


def format_memory(rows):
    lines = [f"{'network':<14} {'implementation':<16} {'one training step':>18} {'predict':>22}"]
    for r in rows:
        lines.append(f"{r['net']:<14} {r['impl']:<16} {r['train_step'] / 2**20:>12.1f} MiB "
                     f"{r['predict'] / 2**20:>10.1f} MiB ({r['n_predict']:,} images, "
                     f"batches of {r['predict_batch']})")
    return "\n".join(lines)


def plot(rows, path):
    """Bar chart of images/s (log scale, min-max as error bars), one panel per
    network, one bar per implementation and thread count; saved as PNG."""
    import matplotlib
    if matplotlib.get_backend().lower() != "agg" and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter
    names = [n for n in NETS if any(r["net"] == n for r in rows)]
    threads = sorted({r["threads"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        impls = [i for i in IMPLS if any(r["net"] == name and r["impl"] == i for r in rows)]
        width = 0.8 / len(threads)
        values = []
        for t_i, T in enumerate(threads):
            sub = {r["impl"]: r for r in rows if r["net"] == name and r["threads"] == T}
            ys = [k + (t_i - (len(threads) - 1) / 2) * width for k in range(len(impls))]
            vals = [sub[i]["ips"] if i in sub else 0 for i in impls]
            errs = [[sub[i]["ips"] - sub[i]["ips_min"] if i in sub else 0 for i in impls],
                    [sub[i]["ips_max"] - sub[i]["ips"] if i in sub else 0 for i in impls]]
            bars = ax.barh(ys, vals, height=width, xerr=errs, capsize=2, error_kw={"lw": 0.8},
                           label=f"{T} thread{'s' * (T > 1)}")
            ax.bar_label(bars, [f"{v:,.0f}" if v >= 10 else (f"{v:.1f}" if v else "") for v in vals],
                         padding=12, fontsize=7)
            values += [r["ips_max"] for r in sub.values()] + [r["ips"] for r in sub.values()]
        batches = sorted({r["batch"] for r in rows if r["net"] == name})
        ax.set_yticks(range(len(impls)), impls, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 2, max(values) * 6)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training images per second (log scale)")
        ax.set_title(f"{name}, batch {max(batches)}"
                     + (f" (loops: {min(batches)})" if len(batches) > 1 else ""), fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def describe_machine():
    blas = ""
    if threadpool_limits is not None:
        from threadpoolctl import threadpool_info
        info = sorted((i for i in threadpool_info() if i.get("user_api") == "blas"),
                      key=lambda i: "numpy" not in i.get("filepath", ""))    # NumPy's own first
        if info:
            lib = info[0]
            blas = f", BLAS {lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')})"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
            f"Python {platform.python_version()}, NumPy {np.__version__}{blas}"
            + (f", PyTorch {torch.__version__}" if torch else ", no PyTorch"))



def quick_or_full(doc, quick, full, format_rows, argv=None):
    """The main() of a benchmark script whose only option is ``--quick``: the
    machine, then ``format_rows`` of ``quick()`` or ``full()``, and the seconds taken."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="rough numbers in a few seconds")
    args = ap.parse_args(argv)
    print(describe_machine())
    start = time.perf_counter()
    rows = quick() if args.quick else full()
    print(format_rows(rows))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts (default: 1 2)")
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    ap.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--steps", type=int, default=10,
                    help="timed steps per turn, at least (default 10; a turn lasts at least 0.05 s)")
    ap.add_argument("--reps", type=int, default=9, help="rounds (default 9)")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between libraries")
    ap.add_argument("--quick", action="store_true", help="a rough run in well under 30 s")
    ap.add_argument("--plot", metavar="PNG", help="save a bar chart")
    ap.add_argument("--profile", action="store_true", help="per-layer time of cnnlib's SimpleConvNet")
    ap.add_argument("--no-memory", action="store_true", help="skip the tracemalloc measurements")
    ap.add_argument("--twin-process", nargs=2, help=argparse.SUPPRESS)     # used by profile_split
    args = ap.parse_args(argv)
    if args.twin_process:
        _twin_process_main(args.twin_process[0], int(args.twin_process[1]))
    if threadpool_limits is None:
        print("note: threadpoolctl is not installed; BLAS threads are not controlled")
    if args.quick:                   # rough numbers in well under 30 s (notebook 06 may run this)
        args.steps, args.reps, args.pause = 3, 3, min(args.pause, 0.3)
    start = time.perf_counter()
    print(describe_machine())
    data = load_data()
    rows = run_benchmarks(args.nets, args.impls, tuple(args.threads), args.steps, args.reps,
                          warmup=1 if args.quick else 3, loops_batch=1 if args.quick else 10,
                          pause=args.pause, gemm_n=1024 if args.quick else 2048, data=data,
                          progress=lambda s: print(s, flush=True))
    print()
    print(format_table(rows))
    if len(args.threads) > 1:
        for name in args.nets:
            def best_cnnlib(T, name=name):
                return max((r["ips"] for r in rows if r["net"] == name and r["threads"] == T
                            and r["impl"].startswith("cnnlib")), default=0)
            fastest = max(args.threads, key=best_cnnlib)
            print(f"{name}: cnnlib is fastest with {fastest} thread{'s' * (fastest > 1)} here")
        for (name, T), ratio in scaling(rows).items():
            print(f"{name}: cnnlib out of the box on {T} cores = {ratio['median']:.2f}x its speed "
                  f"on 1 core (quartiles over the rounds {ratio['q1']:.2f}-{ratio['q3']:.2f})")
    if not args.no_memory:
        print()
        print(format_memory(measure_memory(data=data, n_predict=1000 if args.quick else 10_000)))
    if args.profile:
        for T in args.threads:
            print(f"\nper-layer wall time of cnnlib's SimpleConvNet step, batch 100, "
                  f"{T} BLAS thread(s), ms:")
            for label, ms in profile_layers(threads=T, steps=10 if args.quick else 40, data=data):
                print(f"  {label:<70} {ms:6.2f}")
        if max(args.threads) >= 2:
            for name in args.nets:
                ms = profile_split(name, steps=5 if args.quick else (30 if name != "deep CNN" else 8),
                                   rounds=3 if args.quick else 5, data=data)
                print()
                print(format_split(name, ms))
    if args.plot:
        print(f"\nplot saved to {plot(rows, args.plot)}")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
