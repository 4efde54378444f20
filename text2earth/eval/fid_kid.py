"""FID and KID through torchmetrics, from features extracted once (and cached for real sets).

Features are extracted in batches by the Inception of :mod:`text2earth.eval.features`; torchmetrics then
computes the metrics from those features (its ``feature=`` module is an identity over precomputed
features). Real-set features are cached on disk under a hash of the image pixels and the feature
network, so a changed image set or network never reuses stale features.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import PIL.Image
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance
from tqdm.auto import tqdm

from text2earth.eval.features import InceptionFeatures
from text2earth.io.files import atomic_path
from text2earth.io.images import stack_uint8


class PrecomputedFeatures(nn.Module):
    """The identity, as torchmetrics' feature network: ``update()`` then takes features, not images."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def extract_features(
    extractor: InceptionFeatures,
    images: Sequence[PIL.Image.Image],
    batch_size: int = 32,
    desc: str = "features",
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """``N,num_features`` float64 features of ``images`` (a progress bar over batches)."""
    if len(images) < 2:
        raise ValueError(f"FID/KID need at least 2 images per set, got {len(images)} ({desc})")
    extractor = extractor.to(device)
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        batch = stack_uint8(images[start : start + batch_size]).to(device)
        out.append(extractor(batch).double().cpu())
    return torch.cat(out)


def features_digest(extractor: InceptionFeatures, images: Sequence[PIL.Image.Image]) -> str:
    """A hash of the pixels (in order) and the feature network: the cache key of a real set."""
    digest = hashlib.sha1(f"{extractor.name}:{extractor.num_features}:{extractor.input_size}".encode())
    for image in images:
        rgb = image.convert("RGB")
        digest.update(f"{rgb.size}".encode())
        digest.update(rgb.tobytes())
    return digest.hexdigest()


def cached_features(
    extractor: InceptionFeatures,
    images: Sequence[PIL.Image.Image],
    cache_dir: str | Path | None,
    batch_size: int = 32,
    desc: str = "real features",
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, bool]:
    """Features of a real set, read from ``cache_dir`` when present; ``(features, was_cached)``."""
    if cache_dir is None:
        return extract_features(extractor, images, batch_size, desc, device), False
    path = Path(cache_dir) / f"features-{features_digest(extractor, images)}.safetensors"
    if path.is_file():
        return load_file(path)["features"], True
    features = extract_features(extractor, images, batch_size, desc, device)
    with atomic_path(path) as tmp:
        save_file({"features": features.contiguous()}, tmp)
    return features, False


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FID, KID mean and KID std between two feature sets (torchmetrics, float64).

    The KID subset size is capped at the smaller set (torchmetrics refuses larger subsets); the
    figure that was used is returned as ``kid_subset_size``.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be N,D with the same D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    num_features = int(real.shape[1])
    fid = FrechetInceptionDistance(feature=PrecomputedFeatures(num_features))
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    subset_size = min(kid_subset_size, len(real), len(fake))
    kid = KernelInceptionDistance(
        feature=PrecomputedFeatures(num_features), subsets=kid_subsets, subset_size=subset_size
    )
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    with torch.random.fork_rng():  # KID draws random subsets
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {
        "fid": float(fid.compute()),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "kid_subset_size": subset_size,
        "n_real": len(real),
        "n_fake": len(fake),
    }
