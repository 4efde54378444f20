"""Resolution fidelity: does an image generated at level L look like a real tile of level L?

A level estimator (a small ResNet classifier over the levels of real tiles of known gsd) judges the
generated images. Trained on raw tiles it reads the fine detail the model's decoder removes, not scale
(measured: 68% on held-out real tiles but 28.5% on autoencoder reconstructions of the same tiles), so it is
trained on real tiles passed through the *model's own autoencoder*, and its accuracy on held-out real
reconstructions is reported beside the generated figure: that is the ceiling the generated images can reach.
It works at the evaluated model's own image size and over its level range, and every figure comes with
its chance and majority-class floors.
"""

from __future__ import annotations

from collections import Counter
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
    device: str | torch.device = "cpu",
) -> TrainedClassifier:
    """A classifier over the distinct levels of ``levels`` (trained on ``device``)."""
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
        device=device,
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
    level_range: tuple[float, float] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[TrainedClassifier, list[float]]:
    """A level estimator trained on the real tiles of ``train_shards`` passed through ``vae``.

    ``image_size`` should be the evaluated model's own; ``level_range`` (lowest, highest) keeps the tiles
    within half a level of the levels evaluated, so the estimator chooses among the levels that matter.
    Returns ``(estimator, levels of the training tiles)`` (the latter gives the majority-class floor).
    """
    from text2earth.eval.datasets import read_shard_tiles

    tiles = read_shard_tiles(train_shards, every=train_every)
    if level_range is not None:
        tiles = in_level_range(tiles, level_range)
        if not tiles:
            raise ValueError(
                f"no training tiles of {train_shards} within levels {level_range[0]:g}..{level_range[1]:g}"
            )
    reconstructions = reconstruct(vae, [t.image for t in tiles])
    levels = [t.level for t in tiles]
    estimator = train_level_estimator(reconstructions, levels, image_size, epochs, lr, batch_size, seed, device)
    return estimator, levels


def in_level_range(tiles: Sequence[Any], level_range: tuple[float, float]) -> list[Any]:
    """The tiles (anything with ``.level``) within half a level of ``level_range``."""
    low, high = level_range
    return [t for t in tiles if low - WITHIN <= t.level <= high + WITHIN]


def estimate_levels(estimator: TrainedClassifier, images: Sequence[PIL.Image.Image]) -> list[float]:
    return [float(name) for name in estimator.predict(images)]


def level_errors(
    requested: Sequence[float],
    estimated: Sequence[float],
    classes: Sequence[float] | None = None,
    train_levels: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Mean absolute level error, accuracy within 0.5 level and exact-class accuracy, overall and per level.

    With the estimator's ``classes``, every figure gets its chance floor (a uniform guess among them);
    with ``train_levels``, its majority-class floor (always answering the commonest training level).
    An estimator worth reading beats both.
    """
    if len(requested) != len(estimated) or not requested:
        raise ValueError(f"need as many estimates as requests (got {len(estimated)} and {len(requested)})")
    groups: dict[str, list[tuple[float, float]]] = {}
    for want, got in zip(requested, estimated, strict=True):
        groups.setdefault(level_name(want), []).append((want, got))
    majority = Counter(level_name(v) for v in train_levels).most_common(1)[0][0] if train_levels else None

    def summary(pairs: list[tuple[float, float]]) -> dict[str, Any]:
        out: dict[str, Any] = _scores([want for want, _ in pairs], [got for _, got in pairs])
        out["n"] = len(pairs)
        wants = [want for want, _ in pairs]
        if classes:
            within = [100.0 * sum(abs(c - w) <= WITHIN for c in classes) / len(classes) for w in wants]
            out["chance"] = {
                "exact_acc": 100.0 / len(classes),
                "acc_within_0.5": sum(within) / len(within),
                "mae_level": sum(sum(abs(c - w) for c in classes) / len(classes) for w in wants) / len(wants),
            }
        if majority is not None:
            out["majority"] = {**_scores(wants, [float(majority)] * len(wants)), "level": float(majority)}
        return out

    everything = [pair for pairs in groups.values() for pair in pairs]
    return {**summary(everything), "per_level": {k: summary(v) for k, v in sorted(groups.items(), key=_by_level)}}


def _scores(requested: Sequence[float], estimated: Sequence[float]) -> dict[str, float]:
    errors = [abs(g - w) for w, g in zip(requested, estimated, strict=True)]
    return {
        "mae_level": sum(errors) / len(errors),
        "acc_within_0.5": 100.0 * sum(e <= WITHIN for e in errors) / len(errors),
        "exact_acc": 100.0
        * sum(level_name(w) == level_name(g) for w, g in zip(requested, estimated, strict=True))
        / len(errors),
    }


def _by_level(item: tuple[str, Any]) -> float:
    return float(item[0])
