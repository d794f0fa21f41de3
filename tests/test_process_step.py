"""ProcessStep: the batch split over forked worker processes gives
ParallelStep's numbers bit for bit (train_step's to float rounding:
test_train.py::test_split_step_equals_train_step), and fails, stops and
restarts cleanly."""
import os
import signal

import numpy as np
import pytest
from test_train import bn_net, toy_images

from cnnlib import layers as L
from cnnlib import losses, nets, optim, parallel, train

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="ProcessStep needs Linux (fork)")


def small_net(seed=0, fast=True):
    return nets.SimpleConvNet((1, 8, 8), filters=4, kernel_size=3, hidden=8, n_classes=2, seed=seed,
                              fast=fast)


def dropout_net():
    return nets.Sequential([L.Flatten(), L.Dense(64, 32, rng=0), L.ReLU(), L.Dropout(0.5, rng=7),
                            L.Dense(32, 2, rng=1)])


def weights(net):
    return [store[name].copy() for _, store, name in net.named_arrays()]




def alive(pid):
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == 0


@pytest.mark.parametrize("make_net,make_opt", [
    (lambda: small_net(), lambda net: optim.Momentum(net, 0.05)),
    (lambda: small_net(fast=False), lambda net: optim.Adam(net, 0.01)),
    (dropout_net, lambda net: optim.SGD(net, 0.1)),
    (lambda: bn_net().astype(np.float32), lambda net: optim.Adam(net, 0.01)),
])
@pytest.mark.parametrize("parts", [2, 3])
def test_process_step_is_parallel_step_bit_for_bit(make_net, make_opt, parts):
    """The same parts, shares, dropout seeds, batch-norm exchanges and order of
    sums as the threads: a whole fit (float32, last batch shorter) gives
    identical losses, weights and running statistics. With three parts the
    order of the sums shows: (a + b) + c and (a + c) + b may round apart."""
    x, y = toy_images(90, 1)
    runs = []
    for make_step in (parallel.ParallelStep, parallel.ProcessStep):
        net = make_net()
        with make_step(parts) as step:
            hist = train.fit(net, losses.SoftmaxCrossEntropy(), make_opt(net), x, y, epochs=2,
                             batch_size=32, progress=False, step=step)
        runs.append((hist["batch_loss"], hist["acc"], weights(net)))
    assert runs[0][:2] == runs[1][:2]
    for a, b in zip(runs[0][2], runs[1][2]):
        np.testing.assert_array_equal(a, b)


def test_weights_are_shared_while_training_and_given_back_at_close():
    net = small_net()
    own = [store[name] for _, store, name in net.named_arrays()]
    x, y = toy_images(16, 0)
    step = parallel.ProcessStep(2)
    assert step.worker_pids == []                              # forked at the first step
    step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)
    pids = step.worker_pids
    assert len(pids) == 1 and all(alive(pid) for pid in pids)
    shared = [store[name] for _, store, name in net.named_arrays()]
    assert not any(a is b for a, b in zip(own, shared))
    trained = [a.copy() for a in shared]
    step.close()
    assert not any(alive(pid) for pid in pids) and step.worker_pids == []
    back = [store[name] for _, store, name in net.named_arrays()]
    assert all(a is b for a, b in zip(own, back))              # the arrays the network started with
    for a, b in zip(back, trained):                             # holding the trained values
        np.testing.assert_array_equal(a, b)
    with pytest.raises(RuntimeError, match="closed"):
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)
    step.close()                                                # closing twice is harmless


def test_new_workers_for_another_network_or_replaced_weights():
    x, y = toy_images(16, 0)
    loss_fn = losses.SoftmaxCrossEntropy()
    with parallel.ProcessStep(2) as step:
        a = small_net(seed=1)
        opt_a = optim.SGD(a, 0.1)
        step(a, loss_fn, opt_a, x, y)
        first = step.worker_pids
        step(a, loss_fn, opt_a, x, y)
        assert step.worker_pids == first                        # the same team, step after step
        b, ref = small_net(seed=2), small_net(seed=2)
        got = step(b, loss_fn, optim.SGD(b, 0.1), x, y)         # another network: a new team
        want = train.train_step(ref, loss_fn, optim.SGD(ref, 0.1), x, y)
        assert step.worker_pids != first and not alive(first[0])
        assert got[1] == want[1] and got[0] == pytest.approx(want[0], rel=1e-5)
        # weights replaced between steps (as io.load or a user may): the workers must see them
        second = step.worker_pids
        b.layers[-1].params["W"] = np.zeros_like(b.layers[-1].params["W"])
        c = small_net(seed=2)
        train.train_step(c, loss_fn, optim.SGD(c, 0.1), x, y)
        c.layers[-1].params["W"] = np.zeros_like(c.layers[-1].params["W"])
        got = step(b, loss_fn, optim.SGD(b, 0.1), x, y)
        want = train.train_step(c, loss_fn, optim.SGD(c, 0.1), x, y)
        assert step.worker_pids != second
        assert got[1] == want[1] and got[0] == pytest.approx(want[0], rel=1e-5)


class FailOnLabel(L.Layer):
    """A per-sample layer that raises on a batch holding a marked sample (x > 50)."""
    per_sample = True

    def __init__(self, error):
        super().__init__()
        self.error = error

    def forward(self, x, training=True):
        if (x > 50).any():
            raise self.error
        return x

    def backward(self, dout):
        return dout


@pytest.mark.parametrize("where", ["worker", "this process"])
def test_an_error_in_a_part_is_raised_here_and_the_step_goes_on(where):
    net = nets.Sequential([FailOnLabel(ValueError("bad sample")), L.Flatten(), L.Dense(64, 2, rng=0)])
    x, y = toy_images(16, 0)
    bad = x.copy()
    bad[12 if where == "worker" else 3] = 99.0                 # the second half goes to the worker
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1)
    before = weights(net)
    with parallel.ProcessStep(2) as step:
        with pytest.raises(ValueError, match="bad sample") as info:
            step(net, loss_fn, opt, bad, y)
        if where == "worker":
            assert "ProcessStep worker" in "".join(getattr(info.value, "__notes__", []))
        for a, b in zip(before, weights(net)):                  # no update
            np.testing.assert_array_equal(a, b)
        pids = step.worker_pids
        loss, _ = step(net, loss_fn, opt, x, y)                 # the same workers carry on
        assert step.worker_pids == pids and np.isfinite(loss)


class Marker(L.Layer):
    """Notes whether its batch holds a marked sample (x > 50), for FailInBackward."""
    per_sample = True

    def forward(self, x, training=True):
        self.marked = bool((x > 50).any())
        return x

    def backward(self, dout):
        return dout


class FailInBackward(L.Layer):
    """Raises in its backward pass when its Marker saw a marked sample."""
    per_sample = True

    def __init__(self, marker, error):
        super().__init__()
        self.marker, self.error = marker, error

    def forward(self, x, training=True):
        return x

    def backward(self, dout):
        if self.marker.marked:
            raise self.error
        return dout


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("where", ["worker", "this process"])
def test_a_backward_pass_failing_after_handing_over_layers(where, batch_norm):
    """A worker hands over each layer's gradients as soon as its backward pass
    has finished the layer. Here a part fails in its backward pass after the
    last layers were handed over (with batch norm, after an exchange too): the
    part's own error is raised here, no weight changes, and the next step
    trains (with batch norm, with new workers)."""
    marker, r = Marker(), np.random.default_rng(0)
    middle = [L.BatchNorm1D(16)] if batch_norm else []
    net = nets.Sequential([marker, L.Flatten(), L.Dense(64, 16, rng=r),
                           FailInBackward(marker, ValueError("bad gradient")), *middle, L.ReLU(),
                           L.Dense(16, 2, rng=r)])
    x, y = toy_images(16, 0)
    bad = x.copy()
    bad[12 if where == "worker" else 3] = 99.0                 # the second half goes to the worker
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1)
    with parallel.ProcessStep(2) as step:
        step(net, loss_fn, opt, x, y)
        pids = step.worker_pids
        before = [p.copy() for layer in net.layers for p in layer.params.values()]
        with pytest.raises(ValueError, match="bad gradient") as info:
            step(net, loss_fn, opt, bad, y)
        notes = "".join(getattr(info.value, "__notes__", []))
        assert ("ProcessStep worker" in notes) == (where == "worker")
        after = [p for layer in net.layers for p in layer.params.values()]
        for a, b in zip(before, after, strict=True):            # no update
            np.testing.assert_array_equal(a, b)
        loss, _ = step(net, loss_fn, opt, x, y)
        assert np.isfinite(loss) and (step.worker_pids != pids) == batch_norm
        after = [p for layer in net.layers for p in layer.params.values()]
        assert not any(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_killed_worker_is_reported_and_replaced():
    net = small_net()
    x, y = toy_images(16, 0)
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1)
    with parallel.ProcessStep(2) as step:
        step(net, loss_fn, opt, x, y)
        pid, = step.worker_pids
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="ended unexpectedly"):
            step(net, loss_fn, opt, x, y)
        assert step._state["team"] is None
        assert isinstance(net.layers[0].params["W"], np.ndarray)
        loss, _ = step(net, loss_fn, opt, x, y)                 # a new worker
        assert np.isfinite(loss) and step.worker_pids != [pid]


def test_a_non_finite_loss_stops_before_the_update():
    net = small_net()
    x, y = toy_images(16, 0)
    before = weights(net)
    with parallel.ProcessStep(2) as step, pytest.raises(FloatingPointError, match="not updated"), \
            np.errstate(all="ignore"):
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), np.full_like(x, np.inf), y)
    for a, b in zip(before, weights(net)):
        np.testing.assert_array_equal(a, b)


def test_unsplittable_layers_and_bad_arguments_are_refused():
    x, y = toy_images(8, 0)

    class WholeBatch(FailOnLabel):
        per_sample = False
    odd = nets.Sequential([WholeBatch(None), L.Flatten(), L.Dense(64, 2, rng=0)])
    with parallel.ProcessStep(2) as step, pytest.raises(ValueError, match="train_step"):
        step(odd, losses.SoftmaxCrossEntropy(), optim.SGD(odd, 0.1), x, y)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            parallel.ProcessStep(bad)


def bn_then_fail(error):
    """Conv -> FailOnLabel -> batch norm: a part that fails does so before the
    first exchange, while the other part reaches it and waits there."""
    r = np.random.default_rng(0)
    return nets.Sequential([L.Conv2D(1, 2, 3, pad=1, rng=r, dtype=np.float64), FailOnLabel(error),
                            L.BatchNorm2D(2, dtype=np.float64), L.Flatten(),
                            L.Dense(128, 2, rng=r, dtype=np.float64)])


@pytest.mark.parametrize("where", ["worker", "this process"])
def test_a_part_failing_before_a_batch_norm_exchange_does_not_hang_the_other(where):
    net = bn_then_fail(ValueError("bad sample"))
    x, y = toy_images(16, 0)
    x = x.astype(np.float64)
    bad = x.copy()
    bad[12 if where == "worker" else 3] = 99.0
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1)
    before = weights(net)
    with parallel.ProcessStep(2) as step:
        step(net, loss_fn, opt, x, y)
        pids = step.worker_pids
        with pytest.raises(ValueError, match="bad sample"):       # not the other part's abort
            step(net, loss_fn, opt, bad, y)
        assert step._state["team"] is None and not alive(pids[0])     # exchange counts may differ
        assert all(getattr(layer, "gather_parts", None) is None for layer in net.layers)
        loss, _ = step(net, loss_fn, opt, x, y)                 # new workers
        assert np.isfinite(loss) and step.worker_pids != pids
    assert not any(np.array_equal(a, b) for a, b in zip(before, weights(net)) if a.size > 2)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_an_interrupt_stops_the_workers_and_the_next_step_starts_new_ones(batch_norm):
    """Ctrl-C in this process's part; with batch norm the worker is waiting at
    the first exchange meanwhile."""
    if batch_norm:
        net = bn_then_fail(KeyboardInterrupt())
    else:
        net = nets.Sequential([FailOnLabel(KeyboardInterrupt()), L.Flatten(), L.Dense(64, 2, rng=0)])
    x, y = toy_images(16, 0)
    x = x.astype(np.float64) if batch_norm else x
    bad = x.copy()
    bad[0] = 99.0                                               # this process's part
    loss_fn, opt = losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1)
    with parallel.ProcessStep(2) as step:
        step(net, loss_fn, opt, x, y)
        pids = step.worker_pids
        with pytest.raises(KeyboardInterrupt):
            step(net, loss_fn, opt, bad, y)
        assert step._state["team"] is None and not alive(pids[0])
        step(net, loss_fn, opt, x, y)
        assert step.worker_pids and step.worker_pids != pids


def test_auto_step_picks_processes_for_a_network_and_threads_without_one():
    images = np.zeros((100, 1, 28, 28), np.float32)
    flat = np.zeros((256, 784), np.float32)
    bn_mlp = nets.Sequential([L.Dense(784, 256, rng=0), L.BatchNorm1D(256), L.ReLU()] * 1
                             + [L.Dense(256, 256, rng=1), L.BatchNorm1D(256), L.ReLU()] * 8
                             + [L.Dense(256, 10, rng=2)])
    picks = []
    for cores, net, batch in ((2, nets.SimpleConvNet(), images), (2, bn_mlp, flat), (2, None, None)):
        step = parallel.auto_step(cores, net, batch)
        picks.append(repr(step))
        step.close()
    assert picks == ["ProcessStep(processes=2, blas_threads=1)", "ProcessStep(processes=2, blas_threads=1)",
                     "ParallelStep(threads=2, blas_threads=1)"]



def on_one_core(step):
    """The step, told that the cores are busy for its next million steps."""
    step._watch.one_core_left = 10**6
    return step


@pytest.mark.parametrize("make_net,make_opt", [
    (lambda: small_net(), lambda net: optim.Momentum(net, 0.05)),
    (lambda: small_net(fast=False), lambda net: optim.Adam(net, 0.01)),
    (dropout_net, lambda net: optim.SGD(net, 0.1)),
])
def test_steps_on_one_core_are_the_split_steps_bit_for_bit(make_net, make_opt):
    """On busy cores the parts run one after another in this process: the
    same parts, shares and dropout seeds, so the same numbers as split steps."""
    x, y = toy_images(90, 1)
    runs = []
    for make_step in (lambda: parallel.ProcessStep(2), lambda: on_one_core(parallel.ProcessStep(2))):
        net = make_net()
        with make_step() as step:
            hist = train.fit(net, losses.SoftmaxCrossEntropy(), make_opt(net), x, y, epochs=2,
                             batch_size=32, progress=False, step=step)
            runs.append((hist["batch_loss"], hist["acc"], weights(net), step.steps_on_one_core))
    assert runs[1][3] == 6                         # 2 epochs of 3 batches, all on one core
    assert runs[0][:2] == runs[1][:2]
    for a, b in zip(runs[0][2], runs[1][2]):
        np.testing.assert_array_equal(a, b)


def test_parts_on_one_core_refuse_batch_norm():
    """Parts that must meet at an exchange cannot run one after another: an
    error, not a wait at the barrier."""
    net = bn_net()
    x, y = toy_images(16, 0)
    with parallel._PartsOnOneCore(2, 1) as step, pytest.raises(ValueError, match="batch-norm exchange"):
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)
    assert all(getattr(layer, "gather_parts", None) is None for layer in net.layers)
    # so a ProcessStep sent to one core (by another network) still splits a network with batch norm
    net = bn_net().astype(np.float32)
    with on_one_core(parallel.ProcessStep(2)) as step:
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)
        assert step.steps_on_one_core == 0 and len(step.worker_pids) == 1


def test_two_busy_windows_in_a_row_put_the_next_steps_on_one_core():
    watch = parallel._CoreWatch()
    step_seconds = watch.WINDOW_SECONDS / 5                      # five steps a window

    def window(parts, waited_share):
        decisions = []
        for _ in range(5):
            decisions.append(watch.split_next())
            ns = step_seconds * 1e9 * parts
            watch.record(parts, step_seconds, round((1 - waited_share) * ns), round(waited_share * ns))
        return decisions
    assert watch.MIN_CORES == 1.3
    assert window(2, 0.001) == [True] * 5                 # idle: 2 cores
    window(2, 0.45)                                        # 1.1 cores: one busy window
    window(2, 0.01)                                        # then idle again: nothing happens
    window(2, 0.45)
    assert watch.one_core_left == 0 and watch.busy_windows == 1
    window(2, 0.3)                                         # 1.4 cores: splitting still pays
    assert watch.busy_windows == 0
    window(4, 0.6)                                         # 4 parts, 1.6 cores between them: split
    assert watch.one_core_left == 0 and watch.busy_windows == 0
    window(2, 0.45)
    window(2, 0.4)                                         # 1.2 cores: the second busy window
    steps = round(watch.ONE_CORE_SECONDS / step_seconds)   # that many seconds at the window's speed
    assert watch.one_core_left == steps
    decisions = [watch.split_next() for _ in range(steps + 1)]
    assert decisions == [False] * steps + [True]          # then it splits and judges again


def test_the_step_measures_its_processes_and_goes_to_one_core_when_they_wait(monkeypatch):
    if parallel._open_schedstat("/proc/thread-self/schedstat") is None:
        pytest.skip("this kernel keeps no scheduler statistics (/proc/<pid>/schedstat)")
    x, y = toy_images(16, 0)
    loss_fn = losses.SoftmaxCrossEntropy()
    net = small_net()
    with parallel.ProcessStep(2) as step:
        step(net, loss_fn, optim.SGD(net, 0.1), x, y)
        ran, waited = step._state["team"].cpu_time          # both processes, from the kernel
        assert ran > 0 and waited >= 0
    # from now on every process waits as long as it runs: 2 parts x 1/2 = 1 core between them,
    # and every step seems to take a twentieth of a window
    clock = iter(range(10**6))
    monkeypatch.setattr(parallel, "_cpu_time", lambda files: (next(clock) * 10**6,) * 2)
    ticks = iter(range(10**6))
    monkeypatch.setattr(parallel, "perf_counter", lambda: next(ticks) * parallel._CoreWatch.WINDOW_SECONDS / 20)
    for make_net, on_one in ((small_net, 3), (lambda: bn_net().astype(np.float32), 0)):   # BN: split
        net = make_net()
        with parallel.ProcessStep(2) as step:
            for _ in range(2 * 20):                                # two windows
                step(net, loss_fn, optim.SGD(net, 0.1), x, y)
            assert step.steps_on_one_core == 0
            for _ in range(3):
                step(net, loss_fn, optim.SGD(net, 0.1), x, y)
            assert step.steps_on_one_core == on_one
            if not on_one:                         # batch norm: not even judged
                assert step._watch.busy_windows == step._watch.one_core_left == 0
