"""Image-text retrieval (RSICD / RSITMD Karpathy-style files, several captions per image): R@1/5/10 both ways.

Image -> text: an image counts as found at K when any of its captions is among the K texts ranked highest.
Text -> image: a caption counts as found at K when its own image is among the K images ranked highest.
``mean_recall`` is the mean of the six recalls, the figure RemoteCLIP / GeoRSCLIP tables report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from text2earth.core.errors import UserError
from text2earth.eval.zero_shot import load_images
from text2earth.io.rsicd import read_rsicd_entries
from text2earth.models.rsclip import ImageTextModel

log = logging.getLogger(__name__)

RECALL_AT = (1, 5, 10)


def recall_at_k(similarity: torch.Tensor, text_image: Sequence[int], ks: Sequence[int] = RECALL_AT) -> dict[str, float]:
    """Recalls (percent) from an (n_images, n_texts) similarity matrix; ``text_image[j]`` is text j's image."""
    n_images, n_texts = similarity.shape
    owner = torch.as_tensor(list(text_image))
    if owner.numel() != n_texts:
        raise ValueError(f"need the image of each of the {n_texts} texts, got {owner.numel()}")
    positive = owner[None, :] == torch.arange(n_images)[:, None]  # (n_images, n_texts)
    # Rank of the best-ranked positive text of each image; rank of each text's image among all images.
    text_order = similarity.argsort(dim=1, descending=True)
    i2t_rank = positive.gather(1, text_order).float().argmax(dim=1)
    image_order = similarity.t().argsort(dim=1, descending=True)
    t2i_rank = (image_order == owner[:, None]).float().argmax(dim=1)
    out = {}
    for k in ks:
        out[f"i2t_R@{k}"] = 100.0 * float((i2t_rank < k).float().mean())
    for k in ks:
        out[f"t2i_R@{k}"] = 100.0 * float((t2i_rank < k).float().mean())
    out["mean_recall"] = sum(out.values()) / len(out)
    return out


def retrieval_report(
    model: ImageTextModel,
    json_path: str | Path,
    images_dir: str | Path | None = None,
    split: str | None = "test",
    limit: int | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Recalls of ``model`` on the ``split`` images of a Karpathy-style caption file.

    Images default to ``RSICD_images/`` (else ``images/``) beside the file. Unreadable images and entries without
    captions are skipped and counted.
    """
    json_path = Path(json_path)
    entries = read_rsicd_entries(json_path, split=split)
    if not entries:
        raise UserError(f"{json_path} has no images in split {split!r}")
    if images_dir is None:
        candidates = [json_path.parent / "RSICD_images", json_path.parent / "images", json_path.parent]
        images_dir = next(c for c in candidates if c.is_dir())
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"image folder {str(images_dir)!r} does not exist")
    no_captions = [e.filename for e in entries if not e.captions]
    entries = [e for e in entries if e.captions][:limit]
    images, kept, skipped = load_images([images_dir / e.filename for e in entries])
    for line in skipped:
        log.warning("skipped unreadable image %s", line)
    if not images:
        raise UserError(f"no readable images for {json_path} in {images_dir} ({len(skipped)} skipped)")
    entries = [entries[i] for i in kept]
    texts = [c for e in entries for c in e.captions]
    owner = [i for i, e in enumerate(entries) for _ in e.captions]
    similarity = model.embed_images(images, batch_size) @ model.embed_texts(texts).t()
    return {
        **recall_at_k(similarity, owner),
        "n_images": len(images),
        "n_texts": len(texts),
        "split": split,
        "skipped_images": len(skipped),
        "skipped_files": skipped,
        "images_without_captions": len(no_captions),
        "model_type": model.kind,
        "captions": str(json_path),
    }
