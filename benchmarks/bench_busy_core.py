"""What another program on a core does to a split step, and what ProcessStep
does about it: the evidence for ``cnnlib.parallel._CoreWatch``.

With a second Python process busy for a share of the time (0 to 100 %, in
periods of 20 ms), it times training steps (batch 100) of SimpleConvNet and
the deep CNN three ways, in interleaved rounds, each on its own copy of the
network:

* ``one thread``: ``ParallelStep(1)``, the plain step with one BLAS thread;
* ``always split``: ``ProcessStep(2)`` told never to run its parts in turn;
* ``ProcessStep(2)``: as ``fit`` uses it, splitting, or running the parts in
  turn, as it measures.

It prints each way's speed over one thread, how long the always-split step's
two processes waited for a CPU (the kernel's run queue, as ProcessStep
measures it), the cores its parts got between them (2 x the share of their
time they ran), and the share of the default step's timed steps that ran in
turn (one part after the other, in one process). Needs Linux (ProcessStep) and is meant for two cores.

    python benchmarks/bench_busy_core.py            # about two minutes
    python benchmarks/bench_busy_core.py --quick    # rough, a few seconds
"""
import contextlib
import gc
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_training as bench  # noqa: E402

from cnnlib import fast, losses, optim, parallel  # noqa: E402

SHARES = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)
NETWORKS = ("SimpleConvNet", "deep CNN")
WAYS = ("one thread", "always split", "ProcessStep(2)")


@contextlib.contextmanager
def busy_loop(share, period=0.02, limit=900):
    """Runs the with-block beside a Python process that spins for ``share`` of
    every ``period`` seconds and sleeps for the rest (ends by itself after
    ``limit`` s, should this process die first)."""
    if share <= 0:
        yield
        return
    spin = (f"import time\nend = time.time() + {limit}\nwhile time.time() < end:\n"
            f"    t = time.perf_counter()\n"
            f"    while time.perf_counter() - t < {share * period}:\n        pass\n"
            f"    time.sleep({(1 - share) * period})\n")
    program = subprocess.Popen([sys.executable, "-c", spin])
    try:
        yield
    finally:
        program.kill()
        program.wait()


def _split_processes(step):
    """The schedstat files of an always-split step's processes (this thread, its worker)."""
    team = step._state["team"]
    return [parallel._Team._own_schedstat()] + [worker["schedstat"] for worker in team.workers]


def measure(name, X, y, share, batch=100, rounds=5, settle=0.2, seconds=0.5):
    """Median ms per step of each way, the always-split step's waited share,
    and the share of ProcessStep(2)'s timed steps that ran in turn."""
    ways = {"one thread": parallel.ParallelStep(1), "always split": parallel.ProcessStep(2),
            "ProcessStep(2)": parallel.ProcessStep(2)}
    ways["always split"]._watch.MIN_CORES = 0          # never judged short of cores: it always splits
    runs = {}
    for way, step in ways.items():
        net = bench.build_cnnlib(name)
        runs[way] = (step, net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.01))
    n_batches, k = len(X) // batch, 0

    def train_step(way):
        nonlocal k
        j = (k % n_batches) * batch
        k += 1
        step, net, loss_fn, opt = runs[way]
        step(net, loss_fn, opt, X[j:j + batch], y[j:j + batch])
    times = {way: [] for way in ways}
    ran = waited = one_core = timed = 0
    try:
        with busy_loop(share):
            for way in ways:
                for _ in range(3):
                    train_step(way)
            gc.collect()
            gc.disable()
            for r in range(rounds):
                for way in WAYS[r % 3:] + WAYS[:r % 3]:
                    end = time.perf_counter() + settle
                    while time.perf_counter() < end:
                        train_step(way)
                    before_one_core = ways["ProcessStep(2)"].steps_on_one_core
                    files = _split_processes(ways[way]) if way == "always split" else None
                    before = parallel._cpu_time(files) if files else None
                    start, n = time.perf_counter(), 0
                    while time.perf_counter() - start < seconds:
                        train_step(way)
                        n += 1
                    times[way].append((time.perf_counter() - start) / n * 1e3)
                    if before is not None:
                        after = parallel._cpu_time(files)
                        ran, waited = ran + after[0] - before[0], waited + after[1] - before[1]
                    if way == "ProcessStep(2)":
                        one_core += ways[way].steps_on_one_core - before_one_core
                        timed += n
    finally:
        gc.enable()
        for step in ways.values():
            step.close()
    ms = {way: statistics.median(t) for way, t in times.items()}
    return dict(net=name, share=share, ms=ms, waited=waited / max(ran + waited, 1),
                cores=2 * ran / max(ran + waited, 1), one_core=one_core / max(timed, 1))


def run(networks=NETWORKS, shares=SHARES, data=None, **kwargs):
    X, y = bench.load_data() if data is None else data
    fast.keep_freed_memory()
    return [measure(name, X, y, share, **kwargs) for name in networks for share in shares]


def format_rows(rows):
    lines = [f"{'network':<15}{'loop busy':>10}{'one thread':>12}{'always split':>14}{'ProcessStep(2)':>16}"
             f"{'parts waited':>14}{'parts got':>11}{'one core':>10}",
             f"{'':<15}{'':>10}{'ms/step':>12}{'x one thread':>14}{'x one thread':>16}{'':>14}{'cores':>11}{'':>10}"]
    for r in rows:
        one = r["ms"]["one thread"]
        lines.append(f"{r['net']:<15}{r['share']:>10.0%}{one:>12.2f}{one / r['ms']['always split']:>13.2f}x"
                     f"{one / r['ms']['ProcessStep(2)']:>15.2f}x{r['waited']:>14.1%}{r['cores']:>11.2f}"
                     f"{r['one_core']:>10.0%}")
    watch = parallel._CoreWatch
    lines.append(f"ProcessStep runs its parts in turn after {watch.BUSY_WINDOWS} windows in a row of "
                 f"{watch.WINDOW_SECONDS} s of split steps whose parts got fewer than {watch.MIN_CORES} cores, "
                 f"for {watch.ONE_CORE_SECONDS} s of steps (never with batch norm)")
    return "\n".join(lines)


def main(argv=None):
    if not parallel.can_fork():
        sys.exit("bench_busy_core.py measures ProcessStep, which needs Linux (fork)")
    return bench.quick_or_full(
        __doc__, lambda: run(networks=("SimpleConvNet",), shares=(0.0, 1.0), rounds=1, settle=0.02, seconds=0.05),
        run, format_rows, argv)


if __name__ == "__main__":
    main()
