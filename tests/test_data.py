import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from samplerlab.data import (
    DataError,
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_image_folder,
    make_toy,
)
from samplerlab.registry import UnknownNameError


def test_digits_are_bundled_and_scaled():
    d = load_digits()
    assert d.data.shape == (1797, 1, 8, 8) and d.labels.shape == (1797,)
    assert float(d.data.min()) == -1.0 and float(d.data.max()) == 1.0
    assert d.num_classes == 10 and load_dataset("digits").data.shape == d.data.shape


@pytest.mark.parametrize("name", ["ring", "moons", "swissroll", "checkerboard"])
def test_toys_are_seeded_and_about_unit_scale(name):
    a, b = make_toy(name, 4000, seed=3), make_toy(name, 4000, seed=3)
    assert torch.equal(a, b) and a.shape == (4000, 2)
    assert 0.3 < float(a.std(0).mean()) < 2.0
    assert not torch.equal(a, make_toy(name, 4000, seed=4))


def _png(path, array):
    Image.fromarray(array).save(path)


def test_image_folder_with_classes_flat_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "classes" / cls).mkdir(parents=True)
        for i in range(2):
            _png(tmp_path / "classes" / cls / f"{i}.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    d = load_image_folder(tmp_path / "classes")
    assert d.data.shape == (4, 3, 6, 6) and d.labels.tolist() == [0, 0, 1, 1] and d.class_names == ["cat", "dog"]
    assert float(d.data.min()) >= -1 and float(d.data.max()) <= 1
    grey = load_image_folder(tmp_path / "classes", size=4, channels=1)
    assert grey.data.shape == (4, 1, 4, 4)
    # exact scaling: pixel 0 -> -1, 255 -> 1
    (tmp_path / "flat").mkdir()
    _png(tmp_path / "flat" / "a.png", np.array([[0, 255]], dtype=np.uint8))
    flat = load_image_folder(tmp_path / "flat", channels=1)
    assert flat.labels is None and flat.data.flatten().tolist() == [-1.0, 1.0]
    _png(tmp_path / "flat" / "b.png", np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="differs from"):
        load_image_folder(tmp_path / "flat", channels=1)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png: not a readable image"):
        load_image_folder(tmp_path / "broken")


def test_image_folder_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "empty")


def _cifar(root, n=3, protocol=2):
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
        (root / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane", b"car"]}, protocol=protocol))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches(tmp_path, protocol):
    _cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    train = load_cifar10(tmp_path)
    assert train.data.shape == (15, 3, 32, 32) and train.labels.shape == (15,)
    assert train.class_names == ["airplane", "car"]
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    first = torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32).astype(np.float32) / 127.5 - 1)
    assert torch.equal(train.data[0], first)
    assert load_cifar10(tmp_path, "test").data.shape == (3, 3, 32, 32)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar10_refuses_code_and_reports_bad_files(tmp_path):
    _cifar(tmp_path / "c")
    (tmp_path / "c" / "data_batch_2").write_bytes(pickle.dumps({b"data": _Evil()}))
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR-10 python batch \\(refusing to load posix.getcwd"):
        load_cifar10(tmp_path / "c")
    (tmp_path / "c" / "data_batch_2").unlink()
    with pytest.raises(DataError, match="data_batch_2: missing"):
        load_cifar10(tmp_path / "c")
    with pytest.raises(DataError, match="unknown CIFAR-10 split"):
        load_cifar10(tmp_path / "c", "valid")


def _idx(path, array, magic, compress):
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx(tmp_path, compress):
    rng = np.random.default_rng(2)
    images, labels = rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)
    suffix = ".gz" if compress else ""
    _idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, 2051, compress)
    _idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, 2049, compress)
    d = load_fashion_mnist(tmp_path)
    assert d.data.shape == (5, 1, 28, 28) and d.labels.tolist() == labels.tolist()
    assert torch.allclose(d.data[0, 0], torch.from_numpy(images[0].astype(np.float32) / 127.5 - 1))
    assert d.class_names[9] == "Ankle boot"


def test_fashion_mnist_errors(tmp_path):
    _idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28)), 2049, False)
    with pytest.raises(DataError, match="bad idx magic number 2049, expected 2051"):
        load_fashion_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    _idx(path, np.zeros((2, 28, 28)), 2051, False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="header promises"):
        load_fashion_mnist(tmp_path)
    _idx(path, np.zeros((2, 28, 28)), 2051, False)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: missing"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(UnknownNameError, match="valid names: digits"):
        load_dataset("mnist")
