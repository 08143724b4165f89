"""Feature spaces for the Fréchet distance of images.

FID (Heusel et al. 2017) measures generated images in the features of an Inception network trained
on ImageNet; offline and on 8 x 8 digits samplerlab instead trains a small classifier on the same
labelled data and takes its penultimate layer. The reference statistics (mean and covariance of
the training split's features) are cached as .npz with the held-out real-vs-real distance, the floor
any generator is compared with. A user-supplied TorchScript module plugs in for standard FID.

Caches live under ``$SAMPLERLAB_CACHE`` (default ``~/.cache/samplerlab``), named by the data's
content hash, so a changed data set never reuses stale statistics. Everything is written atomically
and loads without running code (safetensors + JSON, .npz without pickles).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import atomic_path, atomic_write_text
from .distribution import feature_statistics, frechet_distance_gaussians

__all__ = [
    "FeatureClassifier",
    "ClassifierFeatures",
    "TorchScriptFeatures",
    "ReferenceStats",
    "cache_dir",
    "data_fingerprint",
    "train_feature_classifier",
    "load_or_train_classifier",
    "reference_statistics",
    "batched_features",
]


def cache_dir(path: str | Path | None = None) -> Path:
    root = Path(path or os.environ.get("SAMPLERLAB_CACHE") or Path.home() / ".cache" / "samplerlab")
    root.mkdir(parents=True, exist_ok=True)
    return root


def data_fingerprint(*tensors: Tensor | None) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureClassifier(nn.Module):
    """conv-conv-pool-conv-conv, global average pooling to ``feature_dim`` features, a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.GroupNorm(8, 2 * width),
            nn.SiLU(),
            nn.Conv2d(2 * width, feature_dim, 3, padding=1),
            nn.GroupNorm(8, feature_dim),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _shift(x: Tensor, g: torch.Generator, max_shift: int = 1) -> Tensor:
    """Random translations by up to ``max_shift`` pixels (zero padding at -1, the background)."""
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    out = torch.empty_like(x)
    h, w = x.shape[-2:]
    offsets = torch.randint(0, 2 * max_shift + 1, (x.shape[0], 2), generator=g)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = pad[i, :, dy : dy + h, dx : dx + w]
    return out


def train_feature_classifier(
    images: Tensor, labels: Tensor, *, epochs: int = 40, batch_size: int = 64, seed: int = 0, progress: bool = False
) -> FeatureClassifier:
    """Adam with cosine decay and random one-pixel shifts; returns the classifier in eval mode."""
    torch.manual_seed(seed)
    net = FeatureClassifier(images.shape[1], int(labels.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    it = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="feature classifier", unit="epoch")
    net.train()
    for _ in it:
        perm = torch.randperm(len(images), generator=g)
        for k in range(0, len(images), batch_size):
            idx = perm[k : k + batch_size]
            loss = F.cross_entropy(net(_shift(images[idx], g)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


@torch.no_grad()
def batched_features(fn: Callable[[Tensor], Tensor], images: Tensor, batch: int = 500) -> Tensor:
    return torch.cat([fn(images[k : k + batch]).double() for k in range(0, len(images), batch)])


def _unreadable_cache(path: Path, err: Exception) -> None:
    import warnings

    warnings.warn(f"{path}: unreadable cache entry ({type(err).__name__}: {err}); computing it again", RuntimeWarning)


def load_or_train_classifier(
    train_images: Tensor, train_labels: Tensor, *, cache: str | Path | None = None, progress: bool = False
) -> FeatureClassifier:
    """The classifier for this training split, from the cache or trained (and cached) now."""
    from safetensors.torch import load_file, save_file

    key = data_fingerprint(train_images, train_labels)
    folder = cache_dir(cache)
    weights, meta_path = folder / f"classifier-{key}.safetensors", folder / f"classifier-{key}.json"
    if weights.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            net = FeatureClassifier(meta["in_channels"], meta["num_classes"])
            net.load_state_dict(load_file(str(weights)))
            return net.eval()
        except Exception as err:  # noqa: BLE001 - any unreadable cache entry is made again
            _unreadable_cache(weights, err)
    net = train_feature_classifier(train_images, train_labels, progress=progress)
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    atomic_write_text(
        meta_path, json.dumps({"in_channels": train_images.shape[1], "num_classes": int(train_labels.max()) + 1}) + "\n"
    )
    return net


class ClassifierFeatures:
    """Penultimate-layer features (and class predictions) of a ``FeatureClassifier``."""

    name = "classifier"

    def __init__(self, net: FeatureClassifier):
        self.net = net

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        return self.net.features(images.float())

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        return torch.cat([self.net(images[k : k + 500].float()).argmax(1) for k in range(0, len(images), 500)])


class TorchScriptFeatures:
    """A user's exported feature extractor (e.g. an Inception network for standard FID): a TorchScript
    file (``torch.jit.save``) or a ``torch.export`` program (``.pt2``). It receives images (B, C, H, W)
    in [-1, 1] and returns (B, d) features. A TorchScript file runs the user's own module, so only pass
    files you trust."""

    name = "torchscript"

    def __init__(self, path: str | Path):
        import warnings

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"feature extractor {path}: no such file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", DeprecationWarning
                )  # TorchScript is deprecated, still the common format
                if path.suffix == ".pt2":
                    self.module = torch.export.load(str(path)).module()
                else:
                    self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(
                f"feature extractor {path}: not a TorchScript file or torch.export program ({err})"
            ) from None
        self.path = path

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        out = self.module(images.float())
        if out.ndim != 2:
            raise ValueError(f"feature extractor {self.path} returned shape {tuple(out.shape)}; expected (B, d)")
        return out


@dataclass
class ReferenceStats:
    mu: Tensor
    cov: Tensor
    floor: float  # FD of the held-out real images against these statistics
    n_reference: int
    n_held_out: int
    held_out_accuracy: float | None  # the feature classifier's accuracy on held-out images (None: TorchScript)
    features: Tensor  # the reference features themselves (for precision / recall)

    def kid(self, features: Tensor) -> tuple[float, float]:
        """KID to the reference features and its standard error (``metrics.distribution``)."""
        from .distribution import kernel_inception_distance

        return kernel_inception_distance(features, self.features, self._kid_reference_term())

    def kid_difference(self, features_a: Tensor, features_b: Tensor) -> tuple[float, float]:
        """KID(a) - KID(b) with its standard error, a and b sampled from the same seeds (paired)."""
        from .distribution import paired_kid_difference

        return paired_kid_difference(features_a, features_b, self.features, self._kid_reference_term())

    def _kid_reference_term(self) -> float:
        """KID's reference-only part, computed once (it is O(n^2) in the reference features)."""
        if getattr(self, "_kid_yy", None) is None:
            from .distribution import kid_reference_term

            self._kid_yy = kid_reference_term(self.features)
        return self._kid_yy

    def frechet_difference_interval(
        self, features_a: Tensor, features_b: Tensor, level: float = 0.95, resamples: int = 200, seed: int = 0
    ) -> tuple[float, float, float]:
        """FD(a) - FD(b) and its interval, a and b sampled from the same seeds: the half-samples of
        ``frechet_interval`` take the same seeds from both, so the spread is that of the difference (what
        the seeds share cancels) rather than of either FD."""
        from statistics import NormalDist

        a = features_a.reshape(features_a.shape[0], -1).to(torch.float64)
        b = features_b.reshape(features_b.shape[0], -1).to(torch.float64)
        if len(a) != len(b):
            raise ValueError(f"a paired FD difference needs samples from the same seeds, got {len(a)} and {len(b)}")
        n, m = len(a), len(a) // 2
        if m < 2:
            raise ValueError(f"an FD interval needs at least 4 samples, got {n}")
        g = torch.Generator().manual_seed(seed)
        diffs = []
        for _ in range(resamples):
            idx = torch.randperm(n, generator=g)[:m]
            diffs.append(self.frechet(a[idx]) - self.frechet(b[idx]))
        sd = float(torch.tensor(diffs).std()) * math.sqrt(m / n)
        z = NormalDist().inv_cdf((1 + level) / 2)
        diff = self.frechet(a) - self.frechet(b)
        return diff, diff - z * sd, diff + z * sd

    def frechet(self, features: Tensor) -> float:
        mu, cov = feature_statistics(features)
        return frechet_distance_gaussians(mu, cov, self.mu, self.cov)

    def frechet_interval(
        self, features: Tensor, level: float = 0.95, resamples: int = 200, seed: int = 0
    ) -> tuple[float, float]:
        """An interval for ``frechet(features)`` across sample sets of the same size: the estimate plus or minus
        z standard deviations, the standard deviation from half-samples drawn without replacement and scaled by
        sqrt(1/2) (subsampling, Politis, Romano & Wolf 1999: Var FD_n ~ (m / n) Var FD_m for a root-n
        estimator), the reference statistics held fixed. The usual bootstrap (resampling with replacement)
        fails here: duplicated samples shrink the covariance estimate's effective size, and its FDs lie well
        above the estimate (on 359 64-d Gaussian features, all of them: tests/test_metrics.py). At a few
        hundred samples FD moves by tens of percent between sample sets; samplers whose intervals overlap are
        not told apart by it."""
        from statistics import NormalDist

        f = features.reshape(features.shape[0], -1).to(torch.float64)
        n, m = len(f), len(f) // 2
        if m < 2:
            raise ValueError(f"an FD interval needs at least 4 samples, got {n}")
        g = torch.Generator().manual_seed(seed)
        halves = torch.tensor([self.frechet(f[torch.randperm(n, generator=g)[:m]]) for _ in range(resamples)])
        sd = float(halves.std()) * math.sqrt(m / n)
        z = NormalDist().inv_cdf((1 + level) / 2)
        estimate = self.frechet(f)
        return max(0.0, estimate - z * sd), estimate + z * sd


def reference_statistics(
    extractor,
    train_images: Tensor,
    held_out_images: Tensor,
    *,
    tag: str,
    cache: str | Path | None = None,
    held_out_labels: Tensor | None = None,
) -> ReferenceStats:
    """Feature statistics of the training split and the real-vs-real floor (held-out split), cached as .npz."""
    key = data_fingerprint(train_images, held_out_images) + "-" + tag
    path = cache_dir(cache) / f"reference-{key}.npz"
    if path.exists():
        try:
            z = np.load(path, allow_pickle=False)
            acc = float(z["accuracy"])
            return ReferenceStats(
                torch.from_numpy(z["mu"]),
                torch.from_numpy(z["cov"]),
                float(z["floor"]),
                int(z["n_reference"]),
                int(z["n_held_out"]),
                None if math.isnan(acc) else acc,
                torch.from_numpy(z["features"]),
            )
        except Exception as err:  # noqa: BLE001 - any unreadable cache entry is made again
            _unreadable_cache(path, err)
    feats = batched_features(extractor, train_images)
    mu, cov = feature_statistics(feats)
    held = batched_features(extractor, held_out_images)
    floor = frechet_distance_gaussians(*feature_statistics(held), mu, cov)
    acc = None
    if held_out_labels is not None and hasattr(extractor, "predict"):
        acc = float((extractor.predict(held_out_images) == held_out_labels).double().mean())
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                mu=mu.numpy(),
                cov=cov.numpy(),
                floor=floor,
                n_reference=len(train_images),
                n_held_out=len(held_out_images),
                accuracy=float("nan") if acc is None else acc,
                features=feats.numpy(),
            )
    return ReferenceStats(mu, cov, floor, len(train_images), len(held_out_images), acc, feats)
