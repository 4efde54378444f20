"""Resolution fidelity: does an image generated at level L look like a real tile of level L?

A level estimator (a small ResNet classifier over the levels of real tiles of known gsd) judges the
generated images. Trained on raw tiles it reads the fine detail the model's decoder removes, not scale
(measured: 68% on held-out real tiles but 28.5% on autoencoder reconstructions of the same tiles), so it is
trained on real tiles passed through the *model's own autoencoder*, and its accuracy on held-out real
reconstructions is reported beside the generated figure: that is the ceiling the generated images can reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
from tqdm.auto import tqdm

from text2earth.eval.classifier import TrainedClassifier, train_classifier
from text2earth.io.images import stack_uint8, to_pil

# A small member of the ResNet family: fast on CPU for 64-px tiles, enough to tell the levels apart.
LEVEL_ESTIMATOR = {
    "embedding_size": 32,
    "hidden_sizes": [32, 64, 128, 256],
    "depths": [1, 1, 1, 1],
    "layer_type": "basic",
}
WITHIN = 0.5


def level_name(level: float) -> str:
    """Class name of a level (3 decimals: the embedded levels such as 13.678 stay distinct)."""
    return f"{level:.3f}"


@torch.no_grad()
def reconstruct(vae: Any, images: Sequence[PIL.Image.Image], batch_size: int = 64) -> list[PIL.Image.Image]:
    """Images through the autoencoder (posterior mean, then decode): what the model's decoder can show."""
    out = []
    vae.eval()
    dtype = next(vae.parameters()).dtype
    for start in tqdm(range(0, len(images), batch_size), desc="autoencoder reconstructions", leave=False):
        # Scaled in the VAE's dtype, as the VAE sees it (not normalise_uint8's float32).
        x = stack_uint8(images[start : start + batch_size]).to(vae.device, dtype) / 127.5 - 1.0
        decoded = vae.decode(vae.encode(x).latent_dist.mean).sample.float().cpu()
        out.extend(to_pil(d, value_range=(-1.0, 1.0)) for d in decoded)
    return out


def train_level_estimator(
    images: Sequence[PIL.Image.Image],
    levels: Sequence[float],
    image_size: int = 64,
    epochs: int = 8,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> TrainedClassifier:
    """A classifier over the distinct levels of ``levels``."""
    return train_classifier(
        images,
        [level_name(v) for v in levels],
        image_size=image_size,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        architecture=LEVEL_ESTIMATOR,
        desc="level estimator",
    )


def estimator_for_autoencoder(
    vae: Any,
    train_shards: str,
    train_every: int = 1,
    image_size: int = 64,
    epochs: int = 6,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[TrainedClassifier, int]:
    """A level estimator trained on the real tiles of ``train_shards`` passed through ``vae``; ``(it, n_tiles)``."""
    from text2earth.eval.datasets import read_shard_tiles

    tiles = read_shard_tiles(train_shards, every=train_every)
    reconstructions = reconstruct(vae, [t.image for t in tiles])
    estimator = train_level_estimator(
        reconstructions, [t.level for t in tiles], image_size, epochs, lr, batch_size, seed
    )
    return estimator, len(tiles)


def estimate_levels(estimator: TrainedClassifier, images: Sequence[PIL.Image.Image]) -> list[float]:
    return [float(name) for name in estimator.predict(images)]


def level_errors(requested: Sequence[float], estimated: Sequence[float]) -> dict[str, Any]:
    """Mean absolute level error and accuracy within 0.5 level, overall and per requested level."""
    if len(requested) != len(estimated) or not requested:
        raise ValueError(f"need as many estimates as requests (got {len(estimated)} and {len(requested)})")
    groups: dict[str, list[float]] = {}
    for want, got in zip(requested, estimated, strict=True):
        groups.setdefault(level_name(want), []).append(abs(got - want))

    def summary(errors: list[float]) -> dict[str, float]:
        return {
            "mae_level": sum(errors) / len(errors),
            "acc_within_0.5": 100.0 * sum(e <= WITHIN for e in errors) / len(errors),
            "n": len(errors),
        }

    everything = [e for v in groups.values() for e in v]
    return {**summary(everything), "per_level": {k: summary(v) for k, v in sorted(groups.items(), key=_by_level)}}


def _by_level(item: tuple[str, Any]) -> float:
    return float(item[0])
