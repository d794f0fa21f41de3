"""Save and load network weights as .npz files, safely.

``save`` writes every parameter and buffer (batch-norm running statistics)
under the key "<layer index>.<name>", plus the architecture (each layer's
repr) as a string array. ``load`` reads with ``allow_pickle=False``: a file
can only hold plain arrays, so loading one never runs code.
"""
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["save", "load"]

_ARCH_KEY = "__architecture__"


def save(net, path):
    """Write net's parameters and buffers to ``path`` (.npz)."""
    arrays = {key: store[name] for key, store, name in net.named_arrays()}
    arrays[_ARCH_KEY] = np.array([repr(layer) for layer in net.textbook_layers()])
    np.savez(path, **arrays)


def load(net, path):
    """Copy the weights stored in ``path`` into ``net``, in place, all or nothing.

    Every array is checked (names, shapes, numeric dtype) before any is
    copied, so a refused file leaves the network exactly as it was. Raises
    FileNotFoundError for a missing file, ValueError naming what differs if
    the file was saved from a different architecture (missing or extra
    arrays, other shapes), or if it holds anything but plain numeric arrays
    (pickled objects are refused). The net keeps its own dtype.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz weights file (expected a zip "
                         "archive as written by cnnlib.io.save)")
    try:
        with np.load(path, allow_pickle=False) as f:
            stored = {k: f[k] for k in f.files}
    except ValueError as e:                         # object arrays need pickle
        raise ValueError(f"{path}: refusing to load, the file contains pickled "
                         f"objects, not plain arrays ({e})") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: not a readable .npz weights file ({e})") from None
    arch = stored.pop(_ARCH_KEY, None)
    expected = {key: (store, name) for key, store, name in net.named_arrays()}
    missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    ours = [repr(layer) for layer in net.textbook_layers()]
    if missing or extra:
        hint = "" if arch is None else f"\n  file's layers: {list(arch)}\n  net's layers:  {ours}"
        raise ValueError(f"{path}: architecture mismatch; missing {missing}, "
                         f"unexpected {extra}{hint}")
    for key, (store, name) in expected.items():          # check everything first ...
        value = stored[key]
        if value.shape != store[name].shape:
            raise ValueError(f"{path}: {key} has shape {value.shape} in the file but "
                             f"{store[name].shape} in the net (layer {ours[int(key.split('.')[0])]})")
        if not np.issubdtype(value.dtype, np.number) or not np.can_cast(
                value.dtype, store[name].dtype, casting="same_kind"):
            raise ValueError(f"{path}: {key} has dtype {value.dtype}, expected real numbers "
                             f"that fit {store[name].dtype}")
    for key, (store, name) in expected.items():          # ... then copy
        np.copyto(store[name], stored[key], casting="same_kind")
    return net
