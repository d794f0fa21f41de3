"""The training loop learns, is reproducible, and evaluates in bounded batches."""
import numpy as np
import pytest

from cnnlib import layers as L
from cnnlib import losses, nets, optim, parallel, train


def toy_images(n, seed):
    """Class 0: bright left half; class 1: bright right half; plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    x[y == 0, :, :, :4] += 1
    x[y == 1, :, :, 4:] += 1
    return x, y


def small_net(seed=0):
    return nets.SimpleConvNet((1, 8, 8), filters=4, kernel_size=3, hidden=8, n_classes=2, seed=seed)


def test_fit_learns_and_reports_history(capsys):
    x, y = toy_images(400, 0)
    xv, yv = toy_images(100, 1)
    net = small_net()
    loss = losses.SoftmaxCrossEntropy()
    hist = train.fit(net, loss, optim.Adam(net, 0.01), x, y, epochs=3, batch_size=32, validation=(xv, yv))
    assert len(hist["loss"]) == len(hist["val_acc"]) == 3
    assert len(hist["batch_loss"]) == 3 * 13
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_acc"][-1] >= 0.95
    printed = capsys.readouterr()
    assert printed.err == ""
    assert printed.out.count("\n") == 3                 # one line per epoch, no per-batch lines


def test_fit_keeps_freed_memory_out_of_the_box(monkeypatch):
    """fit asks the allocator to keep freed memory (cnnlib.fast.keep_freed_memory),
    whatever step it is given: the page faults it avoids are not the step's business."""
    calls = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(1) or True)
    x, y = toy_images(40, 0)
    for step in ("auto", train.train_step):
        net = small_net()
        train.fit(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y, batch_size=20,
                  progress=False, step=step)
    assert len(calls) == 2


def test_fit_is_reproducible_with_a_seed():
    x, y = toy_images(120, 0)
    runs = []
    for _ in range(2):
        net = small_net()
        train.fit(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.05), x, y, epochs=2,
                  batch_size=16, seed=7, progress=False)
        runs.append(net.layers[0].params["W"].copy())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_batched_prediction_equals_one_big_batch():
    x, _ = toy_images(250, 3)
    net = small_net()
    full = net.forward(x, training=False)
    np.testing.assert_allclose(train.predict_logits(net, x, batch_size=64), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(train.predict(net, x, batch_size=7), full.argmax(axis=1))


def test_evaluate_matches_direct_computation():
    x, y = toy_images(90, 4)
    net = small_net()
    loss_fn = losses.SoftmaxCrossEntropy()
    logits = net.forward(x, training=False)
    expected_loss = loss_fn.forward(logits, y)
    loss, acc = train.evaluate(net, loss_fn, x, y, batch_size=20)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert acc == pytest.approx(np.mean(logits.argmax(1) == y))


def test_prediction_memory_is_bounded_by_the_batch():
    """Predicting many images must not allocate buffers proportional to N."""
    import tracemalloc
    net = small_net()
    x = np.zeros((4000, 1, 8, 8), np.float32)
    tracemalloc.start()
    train.predict(net, x, batch_size=100)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one_batch = 100 * 4 * 6 * 6 * 4 * 9                 # im2col columns of one batch, bytes
    assert peak < 4000 * 2 * 4 + 20 * one_batch         # the logits plus a few batches, not 40


def test_dropout_net_is_deterministic_at_inference():
    net = nets.Sequential([L.Flatten(), L.Dense(64, 16, rng=0), L.ReLU(), L.Dropout(0.5, rng=0),
                           L.Dense(16, 2, rng=1)])
    x, _ = toy_images(10, 5)
    np.testing.assert_array_equal(train.predict_logits(net, x), train.predict_logits(net, x))


SPLIT_STEPS = [parallel.ParallelStep,
               pytest.param(parallel.ProcessStep, id="ProcessStep",
                            marks=pytest.mark.skipif(not parallel.can_fork(), reason="needs fork (Linux)"))]


@pytest.mark.parametrize("make_step", SPLIT_STEPS)
@pytest.mark.parametrize("threads,batch", [(2, 32), (2, 7), (3, 10), (3, 2), (1, 8)])
def test_split_step_equals_train_step(make_step, threads, batch):
    """Gradients, loss and update of the split batch, in threads or in
    processes, equal the unsplit step."""
    x, y = toy_images(batch, 6)
    x = x.astype(np.float64)
    nets_ = [small_net(seed=2).astype(np.float64) for _ in range(2)]
    loss_fns = [losses.SoftmaxCrossEntropy() for _ in range(2)]
    opts = [optim.SGD(n, 0.1) for n in nets_]
    ref = train.train_step(nets_[0], loss_fns[0], opts[0], x, y)
    with make_step(threads) as step:
        got = step(nets_[1], loss_fns[1], opts[1], x, y)
    assert got[1] == ref[1] and got[0] == pytest.approx(ref[0], rel=1e-12)
    for a, b in zip(nets_[0].layers, nets_[1].layers):
        for k in a.grads:
            np.testing.assert_allclose(b.grads[k], a.grads[k], rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(b.params[k], a.params[k], rtol=1e-10, atol=1e-13)


def test_parallel_step_is_deterministic_and_trains_with_fit():
    x, y = toy_images(200, 0)
    runs = []
    for _ in range(2):
        net = small_net()
        hist = train.fit(net, losses.SoftmaxCrossEntropy(), optim.Adam(net, 0.01), x, y, epochs=2,
                         batch_size=32, progress=False, step=parallel.ParallelStep(2))
        runs.append((hist["batch_loss"], net.layers[0].params["W"].copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert hist["loss"][-1] < hist["loss"][0]


class BatchMean(L.Layer):
    """Subtracts the batch mean: not per-sample, and offers no way to split it."""
    per_sample = False

    def forward(self, x, training=True):
        self.cache = True
        return x - x.mean(axis=0)

    def backward(self, dout):
        return dout - dout.mean(axis=0)


def test_parallel_step_refuses_a_layer_it_cannot_split():
    net = nets.Sequential([L.Flatten(), L.Dense(64, 8, rng=0), BatchMean(), L.Dense(8, 2, rng=1)])
    x, y = toy_images(8, 0)
    with pytest.raises(ValueError, match="BatchMean.*no way to split it"):
        parallel.ParallelStep(2)(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)


def bn_net(seed=2):
    r = np.random.default_rng(seed)
    return nets.Sequential([L.Conv2D(1, 4, 3, pad=1, rng=r, dtype=np.float64, impl="fast"), L.BatchNorm2D(4, dtype=np.float64),
                            L.ReLU(), L.MaxPool2D(2, impl="fast"), L.Flatten(),
                            L.Dense(64, 8, rng=r, dtype=np.float64), L.BatchNorm1D(8, dtype=np.float64), L.ReLU(),
                            L.Dense(8, 2, rng=r, dtype=np.float64)])


@pytest.mark.parametrize("make_step", SPLIT_STEPS)
@pytest.mark.parametrize("threads,batch", [(2, 32), (2, 7), (3, 10)])
def test_parallel_batch_norm_equals_whole_batch_batch_norm(make_step, threads, batch):
    """Synchronised batch norm: statistics over the whole batch, so loss,
    gradients, the update and the running statistics equal train_step's."""
    x, y = toy_images(batch, 6)
    x = x.astype(np.float64)
    ref_net, par_net = bn_net(), bn_net()
    for layer in ref_net.layers + par_net.layers:          # non-trivial gamma and beta
        if "gamma" in layer.params:
            layer.params["gamma"] = np.linspace(0.5, 1.5, layer.channels)
            layer.params["beta"] = np.linspace(-0.2, 0.2, layer.channels)
    ref = train.train_step(ref_net, losses.SoftmaxCrossEntropy(), optim.SGD(ref_net, 0.1), x, y)
    with make_step(threads) as step:
        got = step(par_net, losses.SoftmaxCrossEntropy(), optim.SGD(par_net, 0.1), x, y)
    assert got[1] == ref[1] and got[0] == pytest.approx(ref[0], rel=1e-12)
    for a, b in zip(ref_net.layers, par_net.layers):
        for k in a.grads:
            np.testing.assert_allclose(b.grads[k], a.grads[k], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b.params[k], a.params[k], rtol=1e-9, atol=1e-12)
        for k in getattr(a, "buffers", {}):
            np.testing.assert_allclose(b.buffers[k], a.buffers[k], rtol=1e-12, atol=1e-14)
        assert getattr(b, "gather_parts", None) is None                # plain again after the step


def test_split_batch_norm_exchanges_once_per_pass(monkeypatch):
    """Every exchange is a barrier where the parts wait for each other: one
    per batch-norm layer in the forward pass and one in the backward pass."""
    calls = []
    gather = parallel._Gather.gather
    monkeypatch.setattr(parallel._Gather, "gather",
                        lambda self, part, value: calls.append(part) or gather(self, part, value))
    x, y = toy_images(16, 3)
    net = bn_net()
    with parallel.ParallelStep(2) as step:
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x.astype(np.float64), y)
    assert sorted(calls) == [0] * 4 + [1] * 4             # 2 batch-norm layers x (forward, backward)


@pytest.mark.parametrize("make_step", SPLIT_STEPS)
def test_split_batch_norm_is_exact_when_the_mean_dwarfs_the_spread(make_step):
    """The parts' statistics are combined from their own means and squared
    deviations (Chan et al.), not as sum(x**2) - m * mean**2, which would lose
    about 1e-4 of the variance here to cancellation."""
    rng = np.random.default_rng(4)
    x = 1e6 + rng.normal(0, 1, (12, 3, 4, 4))
    y = rng.integers(0, 2, 12)

    def net():
        return nets.Sequential([L.BatchNorm2D(3, dtype=np.float64), L.Flatten(),
                                L.Dense(48, 2, rng=0, dtype=np.float64)])
    ref, par = net(), net()
    train.train_step(ref, losses.SoftmaxCrossEntropy(), optim.SGD(ref, 0.1), x, y)
    with make_step(2) as step:
        step(par, losses.SoftmaxCrossEntropy(), optim.SGD(par, 0.1), x, y)
    for k in ("running_mean", "running_var"):
        np.testing.assert_allclose(par.layers[0].buffers[k], ref.layers[0].buffers[k], rtol=1e-10)
    for a, b in zip(ref.layers, par.layers):
        for k in a.grads:
            np.testing.assert_allclose(b.grads[k], a.grads[k], rtol=1e-7)     # x - mean: 1e6 * 1e-16


def test_parallel_dropout_is_reproducible_from_the_seed():
    def run():
        net = nets.Sequential([L.Flatten(), L.Dense(64, 32, rng=0), L.ReLU(), L.Dropout(0.5, rng=7),
                               L.Dense(32, 2, rng=1)])
        x, y = toy_images(64, 0)
        with parallel.ParallelStep(2) as step:
            hist = train.fit(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y, epochs=2,
                             batch_size=16, progress=False, step=step)
        return hist["batch_loss"], net.layers[1].params["W"].copy()
    (loss_a, w_a), (loss_b, w_b) = run(), run()
    assert loss_a == loss_b
    np.testing.assert_array_equal(w_a, w_b)


@pytest.mark.parametrize("make_step", SPLIT_STEPS)
def test_a_failing_part_does_not_hang_the_others(make_step):
    net = bn_net()
    x, y = toy_images(8, 0)
    x = x.astype(np.float64)
    y[5] = 9                                           # part 2 fails in the loss, after its batch norm
    with make_step(2) as step, pytest.raises(ValueError, match="labels must be in"):
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)
    assert all(getattr(layer, "gather_parts", None) is None for layer in net.layers)


def test_parallel_step_shuts_down_and_says_so():
    step = parallel.ParallelStep(2)
    worker = step._pool
    step.close()
    assert worker._shutdown
    x, y = toy_images(8, 0)
    net = small_net()
    with pytest.raises(RuntimeError, match="closed"):
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)
    step.close()                                     # closing twice is harmless


def test_fit_refuses_nan_or_inf_data_before_any_update():
    x, y = toy_images(64, 0)
    for bad_train in (True, False):
        net = small_net()
        before = net.layers[0].params["W"].copy()
        bad = x.copy()
        bad[5, 0, 2, 3] = np.nan if bad_train else np.inf
        args = (bad, y, None) if bad_train else (x, y, (bad, y))
        with pytest.raises(ValueError, match=r"finite numbers, got 1 NaN or inf value\(s\) in an array "
                                             r"of shape \(64, 1, 8, 8\)"):
            train.fit(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), args[0], args[1],
                      validation=args[2], progress=False)
        np.testing.assert_array_equal(net.layers[0].params["W"], before)


def test_fit_stops_on_a_non_finite_loss_naming_epoch_and_step():
    x, y = toy_images(64, 0)
    net = small_net()
    opt = optim.SGD(net, 1e30)                       # far too high: the weights overflow
    seen = []

    def recording_step(*args):
        seen.append({k: store[name].copy() for k, store, name in net.named_arrays()})
        return train.train_step(*args)
    with np.errstate(all="ignore"), \
            pytest.raises(FloatingPointError, match=r"fit: epoch \d+, step \d+ of 4: loss is (inf|nan).*"
                                                    r"lower learning rate"):
        train.fit(net, losses.SoftmaxCrossEntropy(), opt, x, y, epochs=50, batch_size=16,
                  progress=False, step=recording_step)
    # the weights are those before the failing step: the last good ones, all finite
    for key, store, name in net.named_arrays():
        np.testing.assert_array_equal(store[name], seen[-1][key])
        assert np.isfinite(store[name]).all()


def test_interrupting_fit_returns_the_history_so_far(capsys):
    x, y = toy_images(64, 0)
    net = small_net()
    calls = []

    def interrupted_step(*args):
        if len(calls) == 6:
            raise KeyboardInterrupt
        calls.append(1)
        return train.train_step(*args)
    hist = train.fit(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y, epochs=3,
                     batch_size=16, step=interrupted_step)
    assert len(hist["batch_loss"]) == 6 and len(hist["loss"]) == 1     # epoch 1 done, 2 steps of epoch 2
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == ("fit: interrupted in epoch 2 of 3 after 6 steps; "
                                            "returning the history of the completed steps")


def test_parallel_step_holds_one_blas_thread_until_closed():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    before = blas_threads()
    x, y = toy_images(8, 0)
    net = small_net()
    with parallel.ParallelStep(2, blas_threads=1) as step:
        step(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y)
        assert set(blas_threads()) == {1}
    assert blas_threads() == before


def mlp(depth, width=256, batchnorm=False):
    """784 -> width (x depth - 1) -> 10, ReLU after every hidden layer, optionally batch norm before it."""
    r, layers, n_in = np.random.default_rng(0), [], 784
    for _ in range(depth - 1):
        layers += [L.Dense(n_in, width, rng=r)] + ([L.BatchNorm1D(width)] if batchnorm else []) + [L.ReLU()]
        n_in = width
    return nets.Sequential(layers + [L.Dense(n_in, 10, rng=r)])


def test_training_flops_counts_the_products_of_a_step():
    """Counted by hand: forward, weight gradient and input gradient of every layer, except the
    input gradient of a first layer that skips it (SimpleConvNet's convolution does)."""
    x = np.zeros((100, 1, 28, 28), np.float32)
    conv, dense1, dense2 = 30 * 25 * 24 * 24, 4320 * 100, 100 * 10          # multiply-adds per image
    simple = 100 * 2 * (2 * conv + 3 * dense1 + 3 * dense2)
    assert parallel.training_flops(nets.SimpleConvNet(fast=True), x) == simple
    assert parallel.training_flops(nets.SimpleConvNet(fast=False), x) == simple
    flat = np.zeros((64, 784), np.float32)
    assert parallel.training_flops(mlp(3), flat) == 64 * 2 * 3 * (784 * 256 + 256 * 256 + 256 * 10)
    padded = nets.Sequential([L.Conv2D(1, 4, 3, stride=2, pad=1, rng=0), L.ReLU(), L.Flatten(),
                              L.Dense(4 * 14 * 14, 10, rng=0)])
    assert parallel.training_flops(padded, x[:5]) == 5 * 2 * 3 * (4 * 9 * 14 * 14 + 784 * 10)


def test_split_threshold_counts_parameters_in_processes_and_batch_norms_either_way():
    simple = 30 * 25 + 30 + 4320 * 100 + 100 + 100 * 10 + 10                 # SimpleConvNet's parameters
    bn_mlp = 784 * 256 + 256 + 2 * 256 + 256 * 10 + 10                       # mlp(2, batchnorm=True)
    fixed, per_parameter = parallel.SPLIT_MIN_FLOPS, parallel.SPLIT_FLOPS_PER_PARAMETER
    per_bn = parallel.SPLIT_FLOPS_PER_BATCH_NORM
    assert parallel.split_threshold(nets.SimpleConvNet(), processes=True) == fixed + per_parameter * simple
    assert parallel.split_threshold(mlp(2, batchnorm=True), processes=True) == \
        fixed + per_parameter * bn_mlp + per_bn
    assert parallel.split_threshold(nets.SimpleConvNet(), processes=False) == parallel.THREAD_SPLIT_MIN_FLOPS
    assert parallel.split_threshold(mlp(2, batchnorm=True), processes=False) == \
        parallel.THREAD_SPLIT_MIN_FLOPS + per_bn
    assert parallel.split_threshold(nets.SimpleConvNet()) == \
        parallel.split_threshold(nets.SimpleConvNet(), processes=parallel.can_fork())


def test_auto_step_splits_only_a_step_with_enough_work():
    images = np.zeros((100, 1, 28, 28), np.float32)
    flat = np.zeros((100, 784), np.float32)
    chosen = []

    def pick(cores, net=None, batch=None):
        step = parallel.auto_step(cores, net, batch)
        chosen.append((type(step).__name__, getattr(step, "threads", getattr(step, "processes", None))))
        getattr(step, "close", lambda: None)()
    few_weights = nets.Sequential([L.Conv2D(1, 8, 3, rng=0, input_grad=False), L.MaxPool2D(2), L.Flatten(),
                                   L.Dense(8 * 13 * 13, 10, rng=0)])
    pick(1, nets.SimpleConvNet(), images)                  # one core: the plain step
    pick(2)                                                # nothing to count: split, threads
    pick(2, nets.SimpleConvNet(), images)                  # 433 MFLOP: split
    pick(2, nets.SimpleConvNet(), images[:16])             # 69 MFLOP: one thread
    pick(4, mlp(10), flat)                                 # 436 MFLOP: split
    pick(4, mlp(10, batchnorm=True), flat)                 # the same, with 9 batch norms: one thread
    pick(2, mlp(10, batchnorm=True), np.zeros((256, 784), np.float32))   # 1.1 GFLOP: split
    pick(2, few_weights, images[:50])                      # 14 MFLOP, 13,610 parameters: processes only
    if parallel.can_fork():                                # Linux: processes, whose threshold counts parameters
        split, few = ("ProcessStep", 2), ("ProcessStep", 2)
    else:
        split, few = ("ParallelStep", 2), ("ParallelStep", 1)
    assert chosen == [("function", None), ("ParallelStep", 2), split, ("ParallelStep", 1),
                      (split[0], 4), ("ParallelStep", 1), split, few]


def test_a_one_thread_parallel_step_is_train_step_with_one_blas_thread():
    from threadpoolctl import threadpool_info
    x, y = toy_images(16, 3)
    runs = []
    for use_parallel in (False, True):
        net = nets.Sequential([L.Flatten(), L.Dense(64, 16, rng=0), L.ReLU(), L.Dropout(0.5, rng=0),
                               L.Dense(16, 2, rng=1)])
        opt = optim.SGD(net, 0.1)
        if use_parallel:
            with parallel.ParallelStep(1) as step:
                result = [step(net, losses.SoftmaxCrossEntropy(), opt, x, y) for _ in range(3)]
                assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
        else:
            result = [train.train_step(net, losses.SoftmaxCrossEntropy(), opt, x, y) for _ in range(3)]
        runs.append((result, [store[name].copy() for _, store, name in net.named_arrays()]))
    assert runs[0][0] == runs[1][0]                        # losses and counts, bit for bit
    for a, b in zip(runs[0][1], runs[1][1]):               # weights: the same dropout masks too
        np.testing.assert_array_equal(a, b)


def test_fit_chooses_its_step_for_the_network_and_batch_size(monkeypatch):
    seen = []

    def recording_auto_step(cores=None, net=None, batch=None):
        seen.append((net, None if batch is None else batch.shape))
        return train.train_step
    monkeypatch.setattr(train, "auto_step", recording_auto_step)
    x, y = toy_images(40, 0)
    net = small_net()
    train.fit(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, 0.1), x, y, batch_size=16, progress=False)
    assert seen == [(net, (16, 1, 8, 8))]
