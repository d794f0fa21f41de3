"""Tests for cnnlib.datasets: shipped files, IDX parsing, split, helpers, downloads.

No network: the download path is tested against a local HTTP server on 127.0.0.1.
"""
import functools
import gzip
import hashlib
import http.server
import re
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlib import datasets
from cnnlib.datasets import (
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    DatasetError,
    as_images,
    binary_subset,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    standardize,
    train_val_split,
)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


def idx(array):
    """IDX bytes, written independently of cnnlib (header by hand)."""
    array = np.asarray(array, dtype=np.uint8)
    return (b"\x00\x00\x08" + bytes([array.ndim])
            + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes())


@pytest.fixture(scope="module")
def fashion():
    return load_fashion_mnist()


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


# ------------------------------------------------------------ shipped files

def test_readme_checksums_match_files_and_module():
    rows = re.findall(r"\| `([\w/.-]+\.gz)` \| ([\d,]+) \| `([0-9a-f]{64})` \|",
                      (DATA / "README.md").read_text())
    listed = {name: (int(size.replace(",", "")), sha) for name, size, sha in rows}
    recorded = {**{f"fashion-mnist/{n}": s for n, s in datasets.FASHION_MNIST_FILES.items()},
                **{f"mnist/{n}": s for n, s in datasets.MNIST_10K_FILES.items()}}
    assert set(listed) == set(recorded) and len(listed) == 6
    for name, (size, sha) in listed.items():
        content = (DATA / name).read_bytes()
        assert len(content) == size, name
        assert hashlib.sha256(content).hexdigest() == sha == recorded[name], name


def test_class_names():
    assert FASHION_MNIST_CLASSES[1] == "Trouser" and FASHION_MNIST_CLASSES[3] == "Dress"
    assert len(FASHION_MNIST_CLASSES) == 10
    assert MNIST_CLASSES == ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")


def test_fashion_mnist_shapes_counts_and_range(fashion):
    (X_train, y_train), (X_test, y_test) = fashion
    assert X_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert X_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in (X_train, y_train, X_test, y_test))
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert X_train.min() == 0 and X_train.max() == 255
    assert 70 < X_train.mean() < 75  # published mean pixel 72.9 (0.286 * 255)


def test_mnist_split_sizes_and_stratification(mnist):
    (X_train, y_train), (X_test, y_test) = mnist
    assert X_train.shape == (8000, 28, 28) and y_train.shape == (8000,)
    assert X_test.shape == (2000, 28, 28) and y_test.shape == (2000,)
    assert all(a.dtype == np.uint8 for a in (X_train, y_train, X_test, y_test))
    total = np.bincount(y_train, minlength=10) + np.bincount(y_test, minlength=10)
    assert total.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    share = np.bincount(y_test, minlength=10) / total
    assert np.all(np.abs(share - 0.2) <= 0.01), share


def test_mnist_split_disjoint_and_shuffled(mnist):
    (X_train, y_train), (X_test, y_test) = mnist
    train_bytes = {x.tobytes() for x in X_train}
    test_bytes = {x.tobytes() for x in X_test}
    assert not train_bytes & test_bytes
    assert len(train_bytes) + len(test_bytes) >= 9990  # (almost) no duplicate images
    # not grouped by digit: the first 100 labels of each set hold every digit
    assert len(set(y_train[:100])) == 10 and len(set(y_test[:100])) == 10


def test_mnist_split_is_deterministic(mnist, monkeypatch):
    monkeypatch.setattr(datasets, "_CACHE", {})  # really recompute the split
    (X_train, y_train), (X_test, y_test) = load_mnist()
    for a, b in zip((X_train, y_train, X_test, y_test), (*mnist[0], *mnist[1])):
        np.testing.assert_array_equal(a, b)


def test_mnist_images_look_like_digits(mnist):
    (X_train, y_train), _ = mnist
    assert X_train.min() == 0 and X_train.max() == 255
    assert 30 < X_train.mean() < 36  # MNIST's mean pixel is 33.3
    assert X_train[:, :3, :].mean() < 1 < 60 < X_train[:, 10:18, 10:18].mean()  # centred ink
    ones, zeros = X_train[y_train == 1].mean(), X_train[y_train == 0].mean()
    assert ones < 0.7 * zeros  # a "1" has much less ink than a "0"


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_loaders_return_independent_copies(loader):
    (X, y), (X_test, _) = loader()
    X[:] = 0
    y[:] = 99
    X_test[:] = 0
    (X2, y2), (X_test2, _) = loader()
    assert X2.max() == 255 and y2.max() == 9 and X_test2.max() == 255


def test_stratified_split_small_example():
    y = np.repeat(np.arange(3), [5, 7, 11])  # test quotas 1.09, 1.52, 2.39 for n_test=5
    train, test = datasets._stratified_split(y, n_test=5, seed=0)
    assert np.bincount(y[test]).tolist() == [1, 2, 2]  # the largest remainder gets the 5th
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(23))


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=60), st.data())
def test_stratified_split_properties(labels, data):
    y = np.array(labels)
    n_test = data.draw(st.integers(1, len(y) - 1))
    train, test = datasets._stratified_split(y, n_test, seed=0)
    assert len(test) == n_test
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(y)))
    for c in np.unique(y):
        quota = np.sum(y == c) * n_test / len(y)
        assert abs(np.sum(y[test] == c) - quota) < 1


# ------------------------------------------------------------ IDX parsing

def test_read_idx_roundtrip_plain_and_gzip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx(a)))
    for name in ("a.idx", "a.idx.gz"):
        out = read_idx(tmp_path / name)
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, a)
        out[0, 0, 0] = 7  # the result is an ordinary writable array


def test_truncated_idx_is_rejected(tmp_path):
    a = np.zeros((3, 28, 28), dtype=np.uint8)
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(idx(a)[:-100]))
    with pytest.raises(DatasetError, match=r"truncated.*expected 2352 bytes.*got 2252") as e:
        read_idx(path)
    assert str(path) in str(e.value) and "build_data.py" in str(e.value)


def test_trailing_bytes_are_rejected(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx(np.zeros(5)) + b"junk")
    with pytest.raises(DatasetError, match=r"4 trailing bytes.*expected 5 bytes.*got 9"):
        read_idx(path)


def test_truncated_gzip_file_is_rejected(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes((DATA / "mnist/mnist-10k-labels-idx1-ubyte.gz").read_bytes()[:40])
    with pytest.raises(DatasetError, match="corrupt gzip"):
        read_idx(path)


def test_bit_flip_is_rejected(tmp_path):
    original = DATA / "mnist/mnist-10k-images-idx3-ubyte.gz"
    content = bytearray(original.read_bytes())
    content[len(content) // 2] ^= 0x10
    path = tmp_path / original.name
    path.write_bytes(bytes(content))
    sha = datasets.MNIST_10K_FILES[original.name]
    with pytest.raises(DatasetError, match=f"checksum mismatch: expected SHA-256 {sha}, got "):
        read_idx(path, sha256=sha)
    with pytest.raises(DatasetError, match="corrupt gzip"):  # gzip's CRC catches it too
        read_idx(path)


@pytest.mark.parametrize("header, message", [
    (b"\x00\x00\x09\x01", r"unsupported IDX data type 0x09"),
    (b"\x12\x34\x08\x01", r"magic number 0x000008NN.*found 0x12340801"),
    (b"\x00\x00\x08\x00", r"not an IDX file"),
])
def test_bad_magic_number_is_rejected(tmp_path, header, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(header + struct.pack(">I", 2) + b"\x01\x02")
    with pytest.raises(DatasetError, match=message):
        read_idx(path)


def test_missing_file_names_path_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_CACHE", {})
    with pytest.raises(DatasetError) as e:
        load_fashion_mnist(data_dir=tmp_path)
    message = str(e.value)
    assert str(tmp_path / "fashion-mnist" / "train-images-idx3-ubyte.gz") in message
    assert "not found" in message and "git checkout data/" in message
    monkeypatch.setenv("CNNLIB_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetError, match="elsewhere"):
        load_mnist()


def test_corrupt_shipped_copy_is_rejected_by_loader(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_CACHE", {})
    (tmp_path / "mnist").mkdir()
    for name in datasets.MNIST_10K_FILES:
        (tmp_path / "mnist" / name).write_bytes((DATA / "mnist" / name).read_bytes())
    labels = tmp_path / "mnist" / "mnist-10k-labels-idx1-ubyte.gz"
    content = bytearray(labels.read_bytes())
    content[30] ^= 0x01
    labels.write_bytes(bytes(content))
    with pytest.raises(DatasetError, match="labels-idx1-ubyte.gz: checksum mismatch"):
        load_mnist(data_dir=tmp_path)


def test_default_data_dir_is_the_repository_data_folder(monkeypatch):
    monkeypatch.delenv("CNNLIB_DATA", raising=False)
    assert datasets._data_dir(None) == DATA


# ------------------------------------------------------------ helpers

def test_binary_subset():
    X = np.arange(6 * 2).reshape(6, 2)
    y = np.array([1, 3, 0, 3, 1, 2])
    X_sub, y01 = binary_subset(X, y, negative=1, positive=3)
    np.testing.assert_array_equal(X_sub, X[[0, 1, 3, 4]])
    assert y01.dtype == np.uint8 and y01.tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match=r"\(6, 2\).*\(5,\)"):
        binary_subset(X, y[:5], 1, 3)


def test_binary_subset_trousers_vs_dresses(fashion):
    (X, y), _ = fashion
    X_sub, y01 = binary_subset(X, y, 1, 3)
    assert X_sub.shape == (12000, 28, 28) and y01.sum() == 6000


def test_train_val_split_takes_the_last_samples():
    X, y = np.arange(10 * 3).reshape(10, 3), np.arange(10)
    (X_tr, y_tr), (X_val, y_val) = train_val_split(X, y, 4)
    assert y_tr.tolist() == [0, 1, 2, 3, 4, 5] and y_val.tolist() == [6, 7, 8, 9]
    np.testing.assert_array_equal(X_val, X[6:])
    for bad in (0, 10, -1):
        with pytest.raises(ValueError, match="n_val"):
            train_val_split(X, y, bad)
    with pytest.raises(ValueError, match=r"\(10, 3\).*\(9,\)"):
        train_val_split(X, y[:9], 2)


def test_standardize(fashion):
    (X, _), (X_test, _) = fashion
    X_train, X_val = X[:5000], X[5000:6000]
    X_test = X_test[:2000]
    out = standardize(X_train, X_val, X_test)
    assert isinstance(out, tuple) and len(out) == 3
    Z_train, Z_val, Z_test = out
    assert Z_train.dtype == np.float32 and Z_val.shape == X_val.shape
    varying = X_train.std(axis=0) > 0
    np.testing.assert_allclose(Z_train.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(Z_train.std(axis=0)[varying], 1, atol=1e-3)
    # other sets use the training statistics, not their own
    mean, std = X_train.mean(axis=0), X_train.std(axis=0) + 1e-7
    np.testing.assert_allclose(Z_test, (X_test - mean) / std, rtol=1e-4, atol=1e-3)
    (only,) = standardize(X_train[:10], dtype=np.float64)
    assert only.dtype == np.float64
    with pytest.raises(ValueError, match=r"\(28, 28\).*\(3, 28, 27\)"):
        standardize(X_train, np.zeros((3, 28, 27)))


def test_standardize_constant_pixels_stay_finite():
    X = np.zeros((4, 2, 2), dtype=np.uint8)
    X[:, 0, 0] = [0, 10, 20, 30]
    (Z,) = standardize(X)
    assert np.all(np.isfinite(Z)) and np.all(Z[:, 1, 1] == 0)


def test_as_images(mnist):
    (X, _), _ = mnist
    images = as_images(X[:50])
    assert images.shape == (50, 1, 28, 28) and images.dtype == np.float32
    assert images.min() == 0 and images.max() == 1
    np.testing.assert_allclose(images[:, 0], X[:50] / 255, rtol=1e-6)
    centered = as_images(X[:50], dtype=np.float64, center=True)
    assert centered.dtype == np.float64
    assert centered.min() == -0.5 and centered.max() == 0.5
    with pytest.raises(ValueError, match="uint8"):
        as_images(images[:, 0])  # already scaled floats: dividing again is a bug
    with pytest.raises(ValueError, match=r"\(N, H, W\).*\(50, 1, 28, 28\)"):
        as_images((images * 255).astype(np.uint8))


# ------------------------------------------------------------ downloads

FAKE_SPLITS = {"train": 6, "t10k": 4}


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """A local HTTP server with /good/ (valid files), /bad/ (corrupt), /empty/ (404)."""
    rng = np.random.default_rng(1)
    arrays, checksums = {}, {}
    for split, n in FAKE_SPLITS.items():
        arrays[split] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                         rng.integers(0, 10, n, dtype=np.uint8))
        for kind, array in zip(("images-idx3", "labels-idx1"), arrays[split]):
            name = f"{split}-{kind}-ubyte.gz"
            content = gzip.compress(idx(array), mtime=0)
            checksums[name] = hashlib.sha256(content).hexdigest()
            for folder, data in (("good", content), ("bad", content[:-5] + b"XXXXX")):
                (tmp_path / "www" / folder).mkdir(parents=True, exist_ok=True)
                (tmp_path / "www" / folder / name).write_bytes(data)
    (tmp_path / "www" / "empty").mkdir()

    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for var in ("no_proxy", "NO_PROXY"):  # never send 127.0.0.1 through a proxy
        monkeypatch.setenv(var, "*")
    monkeypatch.setattr(datasets, "MNIST_FULL_FILES", checksums)
    monkeypatch.setattr(datasets, "_CACHE", {})
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, requests, arrays, tmp_path / "cache"
    server.shutdown()
    server.server_close()


def test_full_download_succeeds_and_is_cached(fake_mirror, monkeypatch):
    base, requests, arrays, cache = fake_mirror
    replaced = []
    real_replace = datasets.os.replace
    monkeypatch.setattr(datasets.os, "replace",
                        lambda src, dst: (replaced.append((Path(src), Path(dst))),
                                          real_replace(src, dst)))
    (X_train, y_train), (X_test, y_test) = load_mnist(full=True, cache_dir=cache,
                                                      mirrors=[base + "/good/"])
    np.testing.assert_array_equal(X_train, arrays["train"][0])
    np.testing.assert_array_equal(y_train, arrays["train"][1])
    np.testing.assert_array_equal(X_test, arrays["t10k"][0])
    np.testing.assert_array_equal(y_test, arrays["t10k"][1])
    assert sorted(p.name for p in cache.iterdir()) == sorted(datasets.MNIST_FULL_FILES)
    assert len(requests) == 4
    # atomic: each file was written beside its target, then renamed into place
    assert len(replaced) == 4
    for src, dst in replaced:
        assert src.parent == dst.parent == cache and src.name.endswith(".part")

    monkeypatch.setattr(datasets, "_CACHE", {})  # forget parsed arrays, keep files
    monkeypatch.setenv("CNNLIB_CACHE", str(cache))
    (X_again, _), _ = load_mnist(full=True, mirrors=[base + "/good/"])
    np.testing.assert_array_equal(X_again, X_train)
    assert len(requests) == 4  # nothing downloaded again


def test_corrupt_download_is_rejected_and_leaves_nothing(fake_mirror):
    base, requests, _, cache = fake_mirror
    with pytest.raises(DatasetError) as e:
        load_mnist(full=True, cache_dir=cache, mirrors=[base + "/bad/"])
    assert f"{base}/bad/train-images-idx3-ubyte.gz: checksum mismatch" in str(e.value)
    assert list(cache.iterdir()) == []


def test_corrupt_cached_file_is_downloaded_again(fake_mirror):
    base, requests, _, cache = fake_mirror
    cache.mkdir()
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    load_mnist(full=True, cache_dir=cache, mirrors=[base + "/good/"])
    assert requests.count("/good/t10k-labels-idx1-ubyte.gz") == 1
    name = "t10k-labels-idx1-ubyte.gz"
    sha = hashlib.sha256((cache / name).read_bytes()).hexdigest()
    assert sha == datasets.MNIST_FULL_FILES[name]


def test_falls_back_to_second_mirror(fake_mirror):
    base, requests, arrays, cache = fake_mirror
    (X_train, _), _ = load_mnist(full=True, cache_dir=cache,
                                 mirrors=[base + "/empty", base + "/good/"])
    np.testing.assert_array_equal(X_train, arrays["train"][0])
    assert requests[:2] == ["/empty/train-images-idx3-ubyte.gz",
                            "/good/train-images-idx3-ubyte.gz"]


def test_unreachable_mirrors_give_clear_offline_message(fake_mirror):
    base, _, _, cache = fake_mirror
    mirrors = ["http://127.0.0.1:9/", base + "/empty/"]  # port 9: nothing listens
    with pytest.raises(DatasetError) as e:
        load_mnist(full=True, cache_dir=cache, mirrors=mirrors)
    message = str(e.value)
    assert "Could not download train-images-idx3-ubyte.gz" in message
    assert "http://127.0.0.1:9/train-images-idx3-ubyte.gz: " in message
    assert f"{base}/empty/train-images-idx3-ubyte.gz: HTTP 404" in message
    assert str(cache / "train-images-idx3-ubyte.gz") in message  # where to put it
    assert "offline" in message and "t10k-labels-idx1-ubyte.gz." in message  # all four named
    assert list(cache.iterdir()) == []
