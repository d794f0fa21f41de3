"""Checkpoints: exact round trip, no code execution on load, clear mismatches."""
import numpy as np
import pytest

from cnnlib import io, nets
from cnnlib import layers as L


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


def test_missing_file_raises_file_not_found_naming_the_path(tmp_path):
    path = tmp_path / "nowhere" / "w.npz"
    with pytest.raises(FileNotFoundError, match="nowhere/w.npz: no such weights file"):
        io.load(nets.Sequential([L.Dense(3, 2)]), path)


@pytest.mark.parametrize("spoil", ["shape of the last layer", "text in the last layer"])
def test_a_refused_file_leaves_the_net_exactly_as_it_was(tmp_path, spoil):
    """Everything is checked before anything is copied: a mismatch in the
    last layer must not leave the first layers overwritten."""
    source = nets.SimpleConvNet(seed=1)
    arrays = {key: store[name] for key, store, name in source.named_arrays()}
    arrays["6.b"] = np.zeros(11, np.float32) if spoil.startswith("shape") else np.array(["x"] * 10)
    path = tmp_path / "w.npz"
    np.savez(path, **arrays)
    net = nets.SimpleConvNet(seed=2)
    before = {key: store[name].copy() for key, store, name in net.named_arrays()}
    with pytest.raises(ValueError, match="6.b"):
        io.load(net, path)
    for key, store, name in net.named_arrays():
        np.testing.assert_array_equal(store[name], before[key])
