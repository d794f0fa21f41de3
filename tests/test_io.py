"""Checkpoints: exact round trip, no code execution on load, clear mismatches."""
import numpy as np
import pytest

from cnnlib import io, layers as L, nets


def test_round_trip_gives_identical_predictions(tmp_path):
    net = nets.Sequential([L.Conv2D(1, 4, 3, rng=1), L.BatchNorm2D(4), L.ReLU(), L.MaxPool2D(2),
                           L.Flatten(), L.Dense(4 * 3 * 3, 10, rng=2)])
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    net.forward(x, training=True)                     # moves the BN running statistics
    path = tmp_path / "weights.npz"
    io.save(net, path)
    other = nets.Sequential([L.Conv2D(1, 4, 3, rng=9), L.BatchNorm2D(4), L.ReLU(), L.MaxPool2D(2),
                             L.Flatten(), L.Dense(4 * 3 * 3, 10, rng=8)])
    assert not np.array_equal(other.forward(x, training=False), net.forward(x, training=False))
    io.load(other, path)
    np.testing.assert_array_equal(other.forward(x, training=False), net.forward(x, training=False))
    np.testing.assert_array_equal(other.layers[1].buffers["running_var"], net.layers[1].buffers["running_var"])
    assert other.layers[0].params["W"].dtype == np.float32


def test_pickled_object_array_is_refused(tmp_path):
    net = nets.SimpleConvNet()
    path = tmp_path / "evil.npz"
    arrays = {key: store[name] for key, store, name in net.named_arrays()}
    arrays["0.W"] = np.array([{"payload": "os.system"}], dtype=object)   # needs pickle to load
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="pickled objects"):
        io.load(net, path)


def test_missing_and_extra_arrays_are_listed(tmp_path):
    path = tmp_path / "w.npz"
    io.save(nets.Sequential([L.Dense(3, 2)]), path)
    with pytest.raises(ValueError, match=r"missing \['1.W', '1.b'\]"):
        io.load(nets.Sequential([L.Dense(3, 2), L.Dense(2, 2)]), path)


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "w.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        io.load(nets.Sequential([L.Dense(3, 2)]), path)
