"""Where splitting the batch over two cores starts to pay: the evidence for
``cnnlib.parallel.auto_step``'s threshold.

For networks and batch sizes from tens of MFLOP to GFLOPs per step, it times
training steps of the whole batch on one thread (``ParallelStep(1)``: the
plain step, one BLAS thread) against the batch split over two cores as
auto_step splits it (``parallel.split_step``: two processes on Linux, else two
threads; one BLAS thread each), in interleaved rounds, and prints
the step's FLOPs (``parallel.training_flops``), its parameters and
batch-norm layers, the FLOPs from which ``auto_step`` splits it
(``parallel.split_threshold``), the speed of the split step over one thread,
and what ``auto_step`` picks on two cores. A pick is "right" if it is the faster way, or within 5 % of it.

    python benchmarks/bench_auto_step.py            # about a minute on 2 cores
    python benchmarks/bench_auto_step.py --quick    # rough, a few seconds

Run it with another program busy on a core to see the other side of the
choice: the split step then loses against one thread at every size.
"""
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training as bench  # noqa: E402

from cnnlib import fast, layers, losses, nets, optim, parallel  # noqa: E402


def mlp(depth, width=256, batchnorm=False, seed=0):
    """784 -> width (x depth - 1) -> 10, ReLU after every hidden layer, batch norm before it if asked.
    depth=2: one hidden layer."""
    rng, stack, n_in = np.random.default_rng(seed), [], 784
    for _ in range(depth - 1):
        stack.append(layers.Dense(n_in, width, rng=rng))
        stack += [layers.BatchNorm1D(width)] if batchnorm else []
        stack.append(layers.ReLU())
        n_in = width
    return nets.Sequential(stack + [layers.Dense(n_in, 10, rng=rng)])


# (label, network builder, flat input?, batch size)
CASES = [("8-filter net", lambda: bench.build_cnnlib("8-filter net"), False, 50),
         ("8-filter net", lambda: bench.build_cnnlib("8-filter net"), False, 100),
         ("8-filter net", lambda: bench.build_cnnlib("8-filter net"), False, 400),
         ("SimpleConvNet", lambda: nets.SimpleConvNet(seed=0), False, 16),
         ("SimpleConvNet", lambda: nets.SimpleConvNet(seed=0), False, 24),
         ("SimpleConvNet", lambda: nets.SimpleConvNet(seed=0), False, 32),
         ("SimpleConvNet", lambda: nets.SimpleConvNet(seed=0), False, 100),
         ("deep CNN", lambda: bench.build_cnnlib("deep CNN"), False, 16),
         ("deep CNN", lambda: bench.build_cnnlib("deep CNN"), False, 64),
         ("MLP 784-64-10", lambda: mlp(2, width=64), True, 200),
         ("MLP 3x256", lambda: mlp(3), True, 50),
         ("MLP 3x256", lambda: mlp(3), True, 100),
         ("MLP 10x256", lambda: mlp(10), True, 100),
         ("MLP 10x256, BN", lambda: mlp(10, batchnorm=True), True, 100),
         ("MLP 10x256, BN", lambda: mlp(10, batchnorm=True), True, 256)]


def measure(build, X, y, batch, rounds=5, settle=0.1, seconds=0.25):
    """Median ms per step of one thread and of the split batch, interleaved rounds."""
    net = build()
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.01)
    ways = {"one thread": parallel.ParallelStep(1), "split": parallel.split_step(2)}
    n_batches, k = len(X) // batch, 0

    def step(way):
        nonlocal k
        j = (k % n_batches) * batch
        k += 1
        ways[way](net, loss_fn, opt, X[j:j + batch], y[j:j + batch])
    times = {way: [] for way in ways}
    try:
        for way in ways:
            for _ in range(3):
                step(way)
        gc.collect()
        gc.disable()
        for r in range(rounds):
            for way in list(ways)[r % 2:] + list(ways)[:r % 2]:
                end = time.perf_counter() + settle          # untimed: the threads settle on their cores
                while time.perf_counter() < end:
                    step(way)
                start, n = time.perf_counter(), 0
                while time.perf_counter() - start < seconds:
                    step(way)
                    n += 1
                times[way].append((time.perf_counter() - start) / n * 1e3)
    finally:
        gc.enable()
        for s in ways.values():
            s.close()
    return {way: statistics.median(t) for way, t in times.items()}


def run(cases=CASES, rounds=5, settle=0.1, seconds=0.25, data=None):
    """One row dict per case: label, batch, mflop, parameters, batch_norms, threshold (MFLOP),
    one_ms, split_ms, gain, pick, right."""
    X, y = bench.load_data() if data is None else data
    fast.keep_freed_memory()
    rows = []
    for label, build, flat, batch in cases:
        Xc = X.reshape(len(X), -1) if flat else X
        net = build()
        flops = parallel.training_flops(net, Xc[:batch])
        norms = sum(hasattr(layer, "gather_parts") for layer in net.layers)
        parameters = net.num_params()
        pick = parallel.auto_step(2, net, Xc[:batch])
        pick.close()
        ms = measure(build, Xc, y, batch, rounds, settle, seconds)
        gain = ms["one thread"] / ms["split"]
        split = not (isinstance(pick, parallel.ParallelStep) and pick.threads == 1)
        rows.append(dict(label=label, batch=batch, mflop=flops / 1e6, parameters=parameters,
                         batch_norms=norms, threshold=parallel.split_threshold(net) / 1e6,
                         one_ms=ms["one thread"], split_ms=ms["split"], gain=gain,
                         pick="split" if split else "one thread",
                         right=(gain >= 0.95) if split else (gain <= 1.05)))
    return rows


def format_rows(rows):
    lines = [f"{'network':<16}{'batch':>6}{'MFLOP/step':>11}{'parameters':>11}{'BN':>4}{'splits from':>12}"
             f"{'one thread':>11}{'split':>7}{'split speed':>13}   auto_step picks",
             f"{'':<16}{'':>6}{'':>11}{'':>11}{'':>4}{'MFLOP':>12}{'ms':>11}{'ms':>7}{'':>13}"]
    for r in rows:
        lines.append(f"{r['label']:<16}{r['batch']:>6}{r['mflop']:>11,.0f}{r['parameters']:>11,}"
                     f"{r['batch_norms']:>4}{r['threshold']:>12,.0f}{r['one_ms']:>11.2f}{r['split_ms']:>7.2f}"
                     f"{r['gain']:>12.2f}x   "
                     f"{r['pick']}{'' if r['right'] else '  (the other way was faster)'}")
    right = sum(r["right"] for r in rows)
    if parallel.can_fork():
        how = (f"in processes: {parallel.SPLIT_MIN_FLOPS / 1e6:.0f} MFLOP + "
               f"{parallel.SPLIT_FLOPS_PER_PARAMETER:.0f} FLOP per parameter")
    else:
        how = f"in threads: {parallel.THREAD_SPLIT_MIN_FLOPS / 1e6:.0f} MFLOP"
    lines.append(f"auto_step's pick was the faster way, or within 5 % of it, in {right} of {len(rows)} cases "
                 f"(parallel.split_threshold {how}, + "
                 f"{parallel.SPLIT_FLOPS_PER_BATCH_NORM / 1e6:.0f} MFLOP per batch-norm layer)")
    return "\n".join(lines)


def main(argv=None):
    return bench.quick_or_full(__doc__, lambda: run(rounds=1, settle=0.02, seconds=0.02), run, format_rows, argv)


if __name__ == "__main__":
    main()
