"""The benchmark's baseline computes the right thing, and its functions run.

Nothing here measures speed (timings on a shared machine are noise for a
test); ``python benchmarks/bench_training.py`` does that.
"""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_training as bench  # noqa: E402
from classic import ClassicNet  # noqa: E402

from cnnlib import losses  # noqa: E402


@pytest.mark.parametrize("name", ["SimpleConvNet", "8-filter net"])
def test_classic_network_has_the_same_gradients_as_cnnlib(name):
    net = bench.build_cnnlib(name).astype(np.float64)
    classic = ClassicNet.from_cnnlib(net)
    rng = np.random.default_rng(0)
    x, y = rng.random((6, 1, 28, 28)), rng.integers(0, 10, 6)
    loss_fn = losses.SoftmaxCrossEntropy()
    loss = loss_fn.forward(net.forward(x), y)
    net.backward(loss_fn.backward())
    assert classic.gradient(x, y) == pytest.approx(loss, abs=1e-4)     # the book adds 1e-7 inside the log
    for i, layer in enumerate(net.textbook_layers()):
        for k, g in layer.grads.items():
            np.testing.assert_allclose(classic.grads[f"{k}{i}"], g, rtol=1e-9, atol=1e-12)


def test_classic_network_stays_float32():
    classic = ClassicNet.from_cnnlib(bench.build_cnnlib("SimpleConvNet"))
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    classic.train_step(x, np.array([0, 1, 2, 3]))
    assert all(g.dtype == np.float32 for g in classic.grads.values())
    assert all(p.dtype == np.float32 for p in classic.params.values())


def test_deep_cnn_twin_in_torch_computes_the_same_logits():
    torch = pytest.importorskip("torch")
    net = bench.build_cnnlib("deep CNN").astype(np.float64)
    model = bench.build_torch("deep CNN", net).double().eval()
    x = np.random.default_rng(0).random((3, 1, 28, 28))
    np.testing.assert_allclose(net.forward(x, training=False), model(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-9, atol=1e-10)


def test_flop_count_matches_the_architecture():
    assert bench.flops_per_image("SimpleConvNet") == 4_326_000          # 4.33 MFLOP per image
    assert bench.flops_per_image("8-filter net") == 275_808


def test_paired_ratio_is_the_median_of_the_ratios_of_each_round():
    # a slow second round slows both: each round says 2x, the medians say 1.5x
    a, b = [200, 60, 150], [100, 30, 100]
    assert bench.paired_ratio(a, b) == {"median": 2.0, "q1": pytest.approx(1.75), "q3": 2.0}
    assert np.median(a) / np.median(b) == 1.5


def test_run_benchmarks_returns_rows_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    rows = bench.run_benchmarks(("8-filter net",), ("loops", "classic im2col", "cnnlib", "cnnlib default"),
                                threads=(1, 2), steps=1, reps=3, warmup=0, batch=10, loops_batch=1,
                                pause=0, gemm_n=128, data=data, min_turn_seconds=0)
    impls = [(r["impl"], r["threads"]) for r in rows]
    assert ("cnnlib default", 1) in impls and ("cnnlib default", 2) in impls
    assert ("loops", 1) in impls and ("cnnlib", 2) in impls
    rates = {(r["impl"], r["threads"]): r["rates"] for r in rows}
    for r in rows:
        assert len(r["rates"]) == 3 and r["steps"] == 3
        assert r["ips_min"] <= r["ips"] <= r["ips_max"] and r["ips"] == np.median(r["rates"])
        assert r["vs_torch"] is None and r["peak_gflops"] > 0
        # paired round by round with the classic row of the same thread count
        classic = rates["classic im2col", r["threads"]]
        assert r["vs_classic"] == pytest.approx(np.median(np.divide(r["rates"], classic)))
    assert "cnnlib default" in bench.format_table(rows)
    paired = np.divide(rates["cnnlib default", 2], rates["cnnlib default", 1])
    assert bench.scaling(rows)[("8-filter net", 2)]["median"] == pytest.approx(np.median(paired))
    assert bench.plot(rows, tmp_path / "speed.png").stat().st_size > 1000


def test_a_turn_of_short_steps_lasts_at_least_min_turn_seconds():
    rng = np.random.default_rng(0)
    data = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    rows = bench.run_benchmarks(("8-filter net",), ("cnnlib",), threads=(1,), steps=1, reps=2,
                                warmup=0, batch=10, pause=0, gemm_n=64, data=data,
                                settle_seconds=0, min_turn_seconds=0.2)
    (row,) = rows
    # a step of 10 images takes well under 20 ms, so 0.2 s needs more than the one step asked for
    assert row["steps"] > 2 * 10


def test_every_numpy_row_runs_with_its_own_blas_thread_count(monkeypatch):
    # ParallelStep ("cnnlib default") limits BLAS to one thread per call from its first
    # step until it is closed; the "cnnlib" row of the same thread count must still
    # run with T BLAS threads, in its warm-up and in every turn.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen, plain_step = [], bench.train.train_step

    def recording_step(*args):
        seen.append({i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})
        return plain_step(*args)

    monkeypatch.setattr(bench.train, "train_step", recording_step)
    # a split step for the default row, whatever the network's size (a ParallelStep(1) would call
    # train_step itself, and be recorded with its one BLAS thread)
    monkeypatch.setattr(bench.parallel, "auto_step", lambda cores, *_: bench.parallel.ParallelStep(cores))
    rng = np.random.default_rng(0)
    data = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    bench.run_benchmarks(("8-filter net",), ("cnnlib default", "cnnlib"), threads=(2,), steps=2, reps=3,
                         warmup=2, batch=10, pause=0, gemm_n=64, data=data, settle_seconds=0,
                         min_turn_seconds=0)
    assert len(seen) == 2 + 3 * 2 and all(counts == {2} for counts in seen), seen


def test_memory_and_profile_helpers_run():
    rng = np.random.default_rng(0)
    data = rng.random((60, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 60)
    rows = bench.measure_memory(batch=10, n_predict=40, predict_batch=20, data=data)
    assert [r["impl"] for r in rows] == ["classic im2col", "cnnlib"]
    assert all(0 < r["train_step"] < 50 * 2**20 and 0 < r["predict"] < 50 * 2**20 for r in rows)
    assert "MiB" in bench.format_memory(rows)
    profile = dict(bench.profile_layers(steps=1, batch=10, data=data))
    assert profile["total"] > 0 and any(k.startswith("backward FusedConvPool(Conv2D") for k in profile)


def test_profile_split_runs_every_row_and_formats_them():
    rng = np.random.default_rng(0)
    data = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    ms = bench.profile_split("8-filter net", batch=10, steps=1, rounds=1, data=data)
    assert set(ms) == {"whole", "half", "half + process", "half + thread", "split", "processes"}
    rows = [ms[k] for k in ms if not (k == "half + process" and sys.platform == "win32")
            and not (k == "processes" and not bench.parallel.can_fork())]
    assert all(0 < v < 10_000 for v in rows)
    text = bench.format_split("8-filter net", ms, batch=10)
    assert "the GIL" in text and "2 cores / 1 core" in text
    assert ("ProcessStep(2), whole batch" in text) == bench.parallel.can_fork()


def test_auto_step_benchmark_times_both_ways_and_judges_the_pick():
    import bench_auto_step
    rng = np.random.default_rng(0)
    data = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
    cases = [("SimpleConvNet", lambda: bench_auto_step.nets.SimpleConvNet(seed=0), False, 16),
             ("MLP 3x256, BN", lambda: bench_auto_step.mlp(3, batchnorm=True), True, 32)]
    rows = bench_auto_step.run(cases, rounds=1, settle=0.0, seconds=0.001, data=data)
    assert [(r["batch"], r["batch_norms"], r["pick"]) for r in rows] == [(16, 0, "one thread"),
                                                                          (32, 2, "one thread")]
    # counted by hand: SimpleConvNet 4.33 MFLOP per image; the MLP's three products, three times
    assert rows[0]["mflop"] == pytest.approx(16 * 4.326)
    assert rows[1]["mflop"] == pytest.approx(32 * 6 * (784 * 256 + 256 * 256 + 2560) / 1e6)
    assert rows[0]["parameters"] == 30 * 25 + 30 + 4320 * 100 + 100 + 100 * 10 + 10
    assert rows[1]["parameters"] == 784 * 256 + 256 + 256 * 256 + 256 + 2570 + 2 * (256 + 256)   # + 2 BNs
    assert [r["threshold"] for r in rows] == [bench_auto_step.parallel.split_threshold(case[1]()) / 1e6
                                              for case in cases]
    for r in rows:
        assert r["one_ms"] > 0 and r["split_ms"] > 0
        assert r["gain"] == pytest.approx(r["one_ms"] / r["split_ms"])
        assert r["right"] == (r["gain"] <= 1.05)            # picked one thread: right unless split was faster
    text = bench_auto_step.format_rows(rows)
    assert "auto_step's pick was the faster way" in text and "MLP 3x256, BN" in text


def test_the_default_row_is_what_fit_picks():
    """The benchmark's "cnnlib default" row uses the step fit would choose for that network."""
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 200)
    picked = {}
    for name in ("SimpleConvNet", "8-filter net"):
        step = bench.make_stepper("cnnlib default", name, X, y, 100, 2)
        step(0)
        picked[name] = repr(step.close.__self__)
        step.close()
    # the 8-filter net's step (28 MFLOP, 13,610 parameters) pays for a split in processes, not in threads
    if bench.parallel.can_fork():
        expected = {"SimpleConvNet": "ProcessStep(processes=2, blas_threads=1)",
                    "8-filter net": "ProcessStep(processes=2, blas_threads=1)"}
    else:
        expected = {"SimpleConvNet": "ParallelStep(threads=2, blas_threads=1)",
                    "8-filter net": "ParallelStep(threads=1, blas_threads=1)"}
    assert picked == expected


def test_ratio_noise_cuts_the_rounds_into_runs_and_estimates_both_ways():
    import ratio_noise
    a, b = [200, 60, 150, 100], [100, 30, 100, 50]
    of_medians, paired = ratio_noise.windows(a, b, 3)
    assert of_medians == [pytest.approx(150 / 100), pytest.approx(100 / 50)]
    assert paired == [2.0, 2.0]
    rng = np.random.default_rng(0)
    data = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    rows = ratio_noise.run(threads=(1,), rounds=3, widths=(2, 5), data=data, steps=1, warmup=0,
                           batch=10, pause=0, gemm_n=64, settle_seconds=0, min_turn_seconds=0)
    assert [(r["threads"], r["width"], r["runs"]) for r in rows] == [(1, 2, 2)]
    assert rows[0]["paired_min"] <= rows[0]["paired_max"] and rows[0]["all_rounds"] > 0
    assert "ratio of medians" in ratio_noise.format_rows(rows)


@pytest.mark.skipif(not bench.parallel.can_fork(), reason="ProcessStep needs Linux (fork)")
def test_busy_core_benchmark_times_three_ways_beside_a_busy_loop():
    import bench_busy_core
    rng = np.random.default_rng(0)
    data = rng.random((40, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 40)
    rows = bench_busy_core.run(networks=("SimpleConvNet",), shares=(0.0, 0.5), data=data, batch=10,
                               rounds=1, settle=0.0, seconds=0.001)
    assert [(r["net"], r["share"]) for r in rows] == [("SimpleConvNet", 0.0), ("SimpleConvNet", 0.5)]
    for r in rows:
        assert set(r["ms"]) == set(bench_busy_core.WAYS) and min(r["ms"].values()) > 0
        assert 0 <= r["waited"] <= 1 and r["cores"] == pytest.approx(2 * (1 - r["waited"]))
        assert 0 <= r["one_core"] <= 1
    text = bench_busy_core.format_rows(rows)
    assert "always split" in text and "50%" in text


def test_busy_loop_runs_a_process_only_inside_the_block():
    import bench_busy_core
    with bench_busy_core.busy_loop(0.0):
        pass                                              # no process for an idle machine
    import subprocess
    real = subprocess.Popen
    started = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subprocess, "Popen", lambda *a, **k: started.append(real(*a, **k)) or started[-1])
        with bench_busy_core.busy_loop(0.5, limit=30):
            assert started and started[0].poll() is None    # spinning
    assert started[0].poll() is not None                    # killed at the end of the block
