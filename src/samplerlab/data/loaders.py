"""Loaders for local data in standard formats; images come back as float tensors in [-1, 1]."""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..registry import Registry

__all__ = [
    "DataError",
    "Dataset",
    "DATASETS",
    "load_dataset",
    "split_dataset",
    "load_digits",
    "load_image_folder",
    "load_cifar10",
    "load_fashion_mnist",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class DataError(ValueError):
    """A missing or malformed data file; the message names the file and the problem."""


@dataclass
class Dataset:
    data: Tensor  # (N, C, H, W) images in [-1, 1], or (N, d) points
    labels: Tensor | None  # (N,) int64 class indices
    class_names: list[str] | None = None
    name: str = ""
    # images stored as x = v * bin_width - 1 for integers v (digits 1/8, 8-bit images 2/255); None: continuous
    bin_width: float | None = None

    def integer_values(self) -> Tensor:
        """The stored integers v of quantised images (for dequantised likelihoods)."""
        if self.bin_width is None:
            raise ValueError(f"{self.name or 'this data set'} is not quantised")
        return torch.round((self.data.double() + 1) / self.bin_width).to(torch.int64)

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def num_classes(self) -> int:
        return 0 if self.labels is None else int(self.labels.max()) + 1


def _scale(uint8: np.ndarray) -> Tensor:
    return torch.from_numpy(uint8.astype(np.float32) / 127.5 - 1.0)


def load_digits() -> Dataset:
    """scikit-learn's bundled 8 x 8 digits (1797 images, values 0-16), the offline default."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    return Dataset(images, torch.from_numpy(d.target.astype(np.int64)), [str(i) for i in range(10)], "digits", 1 / 8)


def load_image_folder(root: str | Path, size: int | None = None, channels: int = 3) -> Dataset:
    """PNG / JPEG files under ``root``; class subfolders (root/CLASS/*.png) give labels, a flat folder none.
    ``size`` resizes (bicubic) to size x size; ``channels`` 1 (grey) or 3 (RGB)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    groups = [(d.name, sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)) for d in subdirs]
    groups = [(name, files) for name, files in groups if files]
    flat = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not groups and not flat:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or in class subfolders")
    if not groups:
        groups = [("", flat)]
    images, labels, shape = [], [], None
    for label, (_, files) in enumerate(groups):
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if channels == 1 else "RGB")
                    if size is not None:
                        im = im.resize((size, size), Image.BICUBIC)
                    arr = np.asarray(im, dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"{f}: not a readable image ({err})") from None
            arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataError(f"{f}: size {arr.shape[1:]} differs from {shape[1:]}; pass size= to resize")
            images.append(arr)
            labels.append(label)
    data = _scale(np.stack(images))
    names = [name for name, _ in groups]
    has_labels = names != [""]
    return Dataset(
        data, torch.tensor(labels) if has_labels else None, names if has_labels else None, root.name, 2 / 255
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch cannot run code on load."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "bytes"),
        ("_codecs", "encode"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise DataError(f"{path}: missing (expected the CIFAR-10 python batches)") from None
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise DataError(f"{path}: not a CIFAR-10 python batch ({err})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 python batch (top level is {type(batch).__name__})")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: no 'data' / 'labels' entries")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise DataError(f"{path}: data must be N x 3072 with N labels, got {data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def load_cifar10(root: str | Path, split: str = "train") -> Dataset:
    """CIFAR-10 python batches (data_batch_1..5 / test_batch) from ``root`` (or root/cifar-10-batches-py)."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    if split not in names:
        raise DataError(f"unknown CIFAR-10 split {split!r}; valid: train, test")
    parts = [_read_cifar_batch(root / n) for n in names[split]]
    classes = None
    meta = root / "batches.meta"
    if meta.exists():
        with open(meta, "rb") as f:
            info = _ArrayUnpickler(f, encoding="bytes").load()
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in info.get(b"label_names", [])] or None
    data = np.concatenate([p[0] for p in parts])
    return Dataset(_scale(data), torch.from_numpy(np.concatenate([p[1] for p in parts])), classes, "cifar10", 2 / 255)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing (expected a Fashion-MNIST idx file, optionally .gz)") from None
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except OSError as err:
            raise DataError(f"{path}: not a gzip file ({err})") from None
    if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
        found = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
        raise DataError(f"{path}: bad idx magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{path}: holds {len(body)} bytes of data, its header promises {int(np.prod(dims))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def load_fashion_mnist(root: str | Path, split: str = "train") -> Dataset:
    """Fashion-MNIST idx files ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]) from ``root``."""
    root = Path(root)
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise DataError(f"unknown Fashion-MNIST split {split!r}; valid: train, test")

    def find(stem: str) -> Path:
        for cand in (root / stem, root / f"{stem}.gz"):
            if cand.exists():
                return cand
        return root / f"{stem}.gz"

    images = _read_idx(find(f"{prefix}-images-idx3-ubyte"), 2051)
    labels = _read_idx(find(f"{prefix}-labels-idx1-ubyte"), 2049)
    if len(images) != len(labels):
        raise DataError(f"{root}: {len(images)} images but {len(labels)} labels")
    return Dataset(
        _scale(images[:, None]), torch.from_numpy(labels.astype(np.int64)), FASHION_CLASSES, "fashion-mnist", 2 / 255
    )


DATASETS: Registry[Callable[..., Dataset]] = Registry("data set")
DATASETS.register("digits")(lambda **kw: load_digits())
DATASETS.register("image-folder")(load_image_folder)
DATASETS.register("cifar10")(load_cifar10)
DATASETS.register("fashion-mnist")(load_fashion_mnist)


def load_dataset(name: str, **params) -> Dataset:
    """By name (configuration / CLI boundary): digits, image-folder, cifar10, fashion-mnist."""
    return DATASETS.get(name)(**params)


def split_dataset(dataset: Dataset, held_out: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, held-out) by a seeded permutation; the same seed always gives the same split."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    n = len(dataset)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = n - max(1, round(held_out * n))

    def take(idx: Tensor, part: str) -> Dataset:
        labels = None if dataset.labels is None else dataset.labels[idx]
        return Dataset(dataset.data[idx], labels, dataset.class_names, f"{dataset.name}:{part}", dataset.bin_width)

    return take(perm[:cut], "train"), take(perm[cut:], "held-out")
