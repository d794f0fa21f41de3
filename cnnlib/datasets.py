"""Datasets: Fashion-MNIST and MNIST as plain uint8 NumPy arrays.

Every loader returns ``(X_train, y_train), (X_test, y_test)`` where the images
``X`` have shape ``(N, 28, 28)`` and the labels ``y`` shape ``(N,)``, both
``uint8``: pixels are 0 (background) .. 255 (ink), labels are class ids 0..9.

The files live in the repository's ``data/`` folder (see ``data/README.md``
for where they come from), so everything works offline. Only
``load_mnist(full=True)`` uses the network, once, to fill a local cache.

The files are in the IDX format of the original MNIST distribution: a 4-byte
magic number ``00 00 08 ndim`` (0x08 = unsigned bytes), then ``ndim``
big-endian uint32 sizes, then the pixels row by row. The loaders check each
file against the SHA-256 recorded below before parsing it, and parse each
file only once per session (later calls get copies of the cached arrays).
"""
import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MNIST_CLASSES = tuple(str(digit) for digit in range(10))


class DatasetError(ValueError):
    """A data file is missing, corrupt or cannot be downloaded."""


RESTORE_HINT = ("Restore the shipped files with `git checkout data/` or rebuild "
                "them with `python tools/build_data.py`.")

# SHA-256 of the files shipped in data/ (tools/build_data.py checks these too).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
MNIST_10K_FILES = {
    "mnist-10k-images-idx3-ubyte.gz": "6147811c070e77823b67d8be7963f6ab00af77f5660c687bbdc8a3a1bc7b7459",
    "mnist-10k-labels-idx1-ubyte.gz": "4098cd2f8985372bfe9d2755e944398058f46893cb54c15631c6343ae14199a9",
}
# The standard MNIST files as published by LeCun et al. (their MD5s, the ones
# torchvision checks, are f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...).
# Tests replace this dict to serve small fake files from a local server.
MNIST_FULL_FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
DOWNLOAD_TIMEOUT = 30  # seconds without data before a mirror counts as unreachable

# Parsed arrays, so a notebook that calls a loader twice does not re-read.
# Loaders hand out copies: callers may modify what they get.
_CACHE = {}


# ---------------------------------------------------------------- IDX files

def _sha256_of_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_idx(path, sha256=None):
    """Read an IDX file (gzip-compressed or not) into a uint8 array.

    Parameters
    ----------
    path : str or Path
    sha256 : str, optional
        Expected SHA-256 (hex) of the file as stored on disk; checked before
        anything is parsed.

    Returns
    -------
    np.ndarray of uint8 with the shape stored in the header, e.g.
    ``(N, 28, 28)`` for images or ``(N,)`` for labels.

    Raises
    ------
    DatasetError
        If the file is missing, fails the checksum, is not valid gzip, has a
        wrong magic number, or holds more or fewer bytes than its header says.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found. {RESTORE_HINT}")
    raw = path.read_bytes()
    if sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != sha256:
            raise DatasetError(
                f"{path}: checksum mismatch: expected SHA-256 {sha256}, got {actual} "
                f"({len(raw)} bytes); the file is corrupt or was changed. {RESTORE_HINT}")
    data = raw
    if raw[:2] == b"\x1f\x8b":  # gzip magic bytes
        try:
            data = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: corrupt gzip data ({e}). {RESTORE_HINT}") from None

    if len(data) < 4 or data[:2] != b"\x00\x00" or data[3] == 0:
        raise DatasetError(
            f"{path}: not an IDX file: expected a magic number 0x000008NN "
            f"(NN = number of dimensions), found 0x{data[:4].hex()}. {RESTORE_HINT}")
    if data[2] != 0x08:
        raise DatasetError(
            f"{path}: unsupported IDX data type 0x{data[2]:02x}: only 0x08 "
            f"(unsigned byte) is supported.")
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(
            f"{path}: truncated header: expected {header_size} bytes, got {len(data)}. "
            f"{RESTORE_HINT}")
    shape = tuple(int(n) for n in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected, got = int(np.prod(shape)), len(data) - header_size
    if got != expected:
        problem = "truncated" if got < expected else f"{got - expected} trailing bytes"
        raise DatasetError(
            f"{path}: wrong size ({problem}): the header says shape {shape}, so "
            f"expected {expected} bytes after the {header_size}-byte header, got {got}. "
            f"{RESTORE_HINT}")
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape).copy()


def _data_dir(data_dir):
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get("CNNLIB_DATA"):
        return Path(os.environ["CNNLIB_DATA"])
    return Path(__file__).resolve().parent.parent / "data"


def _read_pairs(paths_and_sums):
    """Read (images, labels, images, labels) files; check that counts agree."""
    arrays = [read_idx(path, sha) for path, sha in paths_and_sums]
    for i in (0, 2):
        (img_path, _), X, y = paths_and_sums[i], arrays[i], arrays[i + 1]
        if X.ndim != 3 or y.ndim != 1 or len(X) != len(y):
            raise DatasetError(
                f"{img_path}: expected images (N, H, W) and labels (N,), "
                f"got {X.shape} and {y.shape}. {RESTORE_HINT}")
    return tuple(arrays)


def _copies(arrays):
    X_train, y_train, X_test, y_test = (a.copy() for a in arrays)
    return (X_train, y_train), (X_test, y_test)


# ---------------------------------------------------------------- loaders

def load_fashion_mnist(data_dir=None):
    """Fashion-MNIST (Zalando Research, MIT licence): 60,000 + 10,000 images.

    Parameters
    ----------
    data_dir : path, optional
        Folder holding ``fashion-mnist/``; default ``$CNNLIB_DATA`` or the
        repository's ``data/``.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        uint8 arrays of shapes (60000, 28, 28), (60000,), (10000, 28, 28),
        (10000,). Labels index ``FASHION_MNIST_CLASSES``; each class has
        6,000 training and 1,000 test images. The arrays are fresh copies.
    """
    folder = _data_dir(data_dir) / "fashion-mnist"
    key = ("fashion-mnist", str(folder))
    if key not in _CACHE:
        _CACHE[key] = _read_pairs([(folder / name, sha)
                                   for name, sha in FASHION_MNIST_FILES.items()])
    return _copies(_CACHE[key])


def load_mnist(full=False, data_dir=None, cache_dir=None, mirrors=None):
    """MNIST handwritten digits (LeCun, Cortes, Burges; CC BY-SA 3.0).

    By default this is NOT the standard MNIST split. It returns the 10,000
    images shipped in ``data/mnist/`` (the first 10,000 of the official
    training set), split once, deterministically and stratified by digit,
    into 8,000 training and 2,000 test images:

    * each digit gets a share of the 2,000 test images proportional to its
      count (largest-remainder rounding, so the shares add up to exactly
      2,000; here that is round(20 %) of every digit);
    * the images of each digit, in a permutation drawn from
      ``np.random.default_rng(0)``, go to the test set first, the rest to
      the training set;
    * both sets are then shuffled with the same generator, so they are
      not grouped by digit.

    ``full=True`` returns the standard 60,000/10,000 MNIST instead. It is
    downloaded once from ``mirrors`` (default ``MNIST_MIRRORS``) into
    ``cache_dir`` (default ``$CNNLIB_CACHE`` or ``~/.cache/cnnlib``),
    checksum-verified; later calls use the cached files. Offline, copy the
    four ``*-ubyte.gz`` files into the cache folder yourself.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        uint8 arrays: (8000, 28, 28), (8000,), (2000, 28, 28), (2000,) by
        default, (60000, 28, 28), (60000,), (10000, 28, 28), (10000,) with
        ``full=True``. Labels are digits 0..9. The arrays are fresh copies.
    """
    if full:
        folder = _cache_dir(cache_dir)
        key = ("mnist-full", str(folder))
        if key not in _CACHE:
            try:
                paths = [(download(name, sha, folder, mirrors), sha)
                         for name, sha in MNIST_FULL_FILES.items()]
            except DatasetError as e:
                raise DatasetError(f"{e}\nload_mnist(full=True) needs all four files in "
                                   f"{folder}: {', '.join(MNIST_FULL_FILES)}.") from None
            _CACHE[key] = _read_pairs(paths)
        return _copies(_CACHE[key])

    folder = _data_dir(data_dir) / "mnist"
    key = ("mnist-10k", str(folder))
    if key not in _CACHE:
        X, y = (read_idx(folder / name, sha) for name, sha in MNIST_10K_FILES.items())
        if X.shape[1:] != (28, 28) or y.shape != (len(X),):
            raise DatasetError(f"{folder}: expected images (N, 28, 28) and labels (N,), "
                               f"got {X.shape} and {y.shape}. {RESTORE_HINT}")
        train, test = _stratified_split(y, n_test=2000, seed=0)
        _CACHE[key] = (X[train], y[train], X[test], y[test])
    return _copies(_CACHE[key])


def _stratified_split(y, n_test, seed):
    """Indices (train, test): test holds each class's proportional share."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n_test / len(y)
    n_per_class = np.floor(quota).astype(int)
    leftover = n_test - n_per_class.sum()
    n_per_class[np.argsort(-(quota - n_per_class), kind="stable")[:leftover]] += 1
    train, test = [], []
    for c, k in zip(classes, n_per_class):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


# ---------------------------------------------------------------- downloads

def _cache_dir(cache_dir):
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("CNNLIB_CACHE"):
        return Path(os.environ["CNNLIB_CACHE"])
    return Path.home() / ".cache" / "cnnlib"


def download(filename, sha256, cache_dir=None, mirrors=None, timeout=None):
    """Return the path of ``cache_dir/filename``, downloading it if needed.

    A cached file whose SHA-256 matches is used as is. Otherwise each mirror
    (a base URL; ``mirror + filename`` is fetched) is tried in turn. The
    download goes to a temporary file in ``cache_dir`` and is renamed into
    place only after its checksum matched, so an interrupted or corrupt
    download never leaves a file that looks complete.

    Raises
    ------
    DatasetError
        If no mirror delivered a file with the right checksum; the message
        lists every URL tried with its error, and how to place the file by
        hand.
    """
    folder = _cache_dir(cache_dir)
    target = folder / filename
    failures = []
    if target.is_file():
        if _sha256_of_file(target) == sha256:
            return target
        failures.append(f"{target}: cached file has the wrong checksum, downloading again")
    mirrors = MNIST_MIRRORS if mirrors is None else list(mirrors)
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    folder.mkdir(parents=True, exist_ok=True)
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += filename
        tmp = None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, \
                    tempfile.NamedTemporaryFile(dir=folder, prefix=filename + ".",
                                                suffix=".part", delete=False) as f:
                tmp = Path(f.name)
                digest = hashlib.sha256()
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    f.write(block)
            if digest.hexdigest() != sha256:
                failures.append(f"{url}: checksum mismatch: expected SHA-256 "
                                f"{sha256}, got {digest.hexdigest()}")
                continue
            # Same folder, so the rename is atomic: readers see all or nothing.
            os.replace(tmp, target)
            tmp = None
            return target
        except urllib.error.HTTPError as e:
            failures.append(f"{url}: HTTP {e.code} {e.reason}")
        except urllib.error.URLError as e:
            failures.append(f"{url}: {e.reason}")
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"{url}: {type(e).__name__}: {e}")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    tried = "\n".join("  " + line for line in failures) or "  (no mirrors given)"
    source = (mirrors or MNIST_MIRRORS)[0]
    raise DatasetError(
        f"Could not download {filename}. Tried:\n{tried}\n"
        f"If you are offline, get the file on another machine (e.g. from {source}) "
        f"and copy it to {target} (SHA-256 {sha256}); or set CNNLIB_CACHE to a "
        f"folder that holds it. The default load_mnist() needs no download.")


# ---------------------------------------------------------------- helpers

def _check_pair(X, y):
    X, y = np.asarray(X), np.asarray(y)
    if y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"expected X of shape (N, ...) and y of shape (N,), "
                         f"got X {X.shape} and y {y.shape}")
    return X, y


def binary_subset(X, y, negative, positive):
    """Keep only two classes, relabelled 0 (``negative``) and 1 (``positive``).

    X : (N, ...) array, y : (N,) class ids.
    Returns ``(X_sub, y01)``: X_sub (M, ...) a copy, y01 (M,) uint8, 1 where
    ``y == positive``. Example: ``binary_subset(X, y, 1, 3)`` gives
    trousers (0) vs dresses (1) from Fashion-MNIST.
    """
    X, y = _check_pair(X, y)
    if negative == positive:
        raise ValueError(f"negative and positive must differ, both are {negative!r}")
    keep = (y == negative) | (y == positive)
    return X[keep], (y[keep] == positive).astype(np.uint8)


def train_val_split(X, y, n_val):
    """Hold out the LAST ``n_val`` samples for validation (no shuffling).

    X : (N, ...), y : (N,). Returns ``((X_tr, y_tr), (X_val, y_val))`` with
    N - n_val and n_val samples; these are views of X and y, not copies.
    """
    X, y = _check_pair(X, y)
    n = len(X)
    if not 0 < n_val < n:
        raise ValueError(f"n_val must be between 1 and {n - 1} for {n} samples, got {n_val}")
    return (X[:n - n_val], y[:n - n_val]), (X[n - n_val:], y[n - n_val:])


def standardize(X_train, *others, eps=1e-7, dtype=np.float32):
    """Per-pixel standardisation with the statistics of ``X_train`` only.

    Each array becomes ``(X - mean) / (std + eps)`` where mean and std are
    taken over the samples of ``X_train`` (axis 0), one value per pixel.
    Using the training statistics for every set keeps the test set unseen.

    X_train : (N, ...); others : arrays of shape (M, ...) with the same
    trailing shape. Returns a tuple of new ``dtype`` arrays in the same order,
    train first: ``X_tr, X_val, X_te = standardize(X_tr, X_val, X_te)``.

    Note: a pixel that never varies in X_train (std 0) maps to
    ``(x - mean) / eps`` elsewhere, which is huge if that pixel differs there.
    """
    X_train = np.asarray(X_train)
    for X in others:
        if np.shape(X)[1:] != X_train.shape[1:]:
            raise ValueError(f"every array must have per-sample shape {X_train.shape[1:]} "
                             f"like X_train {X_train.shape}, got {np.shape(X)}")
    mean = X_train.mean(axis=0, dtype=np.float64)
    std = X_train.std(axis=0, dtype=np.float64) + eps
    mean, std = mean.astype(dtype), std.astype(dtype)
    return tuple((np.asarray(X).astype(dtype) - mean) / std for X in (X_train,) + others)


def as_images(X, dtype=np.float32, center=False):
    """Raw uint8 pixels (N, H, W) -> network input (N, 1, H, W) in [0, 1].

    With ``center=True`` the range is [-0.5, 0.5] (``X / 255 - 0.5``).
    """
    X = np.asarray(X)
    if X.ndim != 3 or X.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels of shape (N, H, W), "
                         f"got {X.dtype} {X.shape}")
    images = X[:, None, :, :].astype(dtype) / 255
    return images - 0.5 if center else images
