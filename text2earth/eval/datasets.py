"""Real evaluation sets: RSICD (``dataset_rsicd.json`` + its image folder) and the embedded held-out tiles.

Both give :class:`RealImage` items: the image, its captions, its scene class and its level (0 = unknown).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image

from text2earth.core.resolution import UNKNOWN_LEVEL, gsd_to_level
from text2earth.io.images import decode_rgb, load_rgb
from text2earth.io.rsicd import read_rsicd_entries
from text2earth.io.shards import iter_samples


@dataclass
class RealImage:
    key: str
    image: PIL.Image.Image
    captions: list[str]
    label: str = ""
    level: float = UNKNOWN_LEVEL
    meta: dict = field(default_factory=dict)


def read_rsicd(
    json_path: str | Path, images_dir: str | Path | None = None, split: str = "test", limit: int | None = None
) -> list[RealImage]:
    """The ``split`` images of RSICD with their captions; images from ``images_dir`` (default: beside the json,
    in ``RSICD_images/``)."""
    json_path = Path(json_path)
    entries = read_rsicd_entries(json_path, split=split)
    images_dir = Path(images_dir) if images_dir is not None else json_path.parent / "RSICD_images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"RSICD image folder {str(images_dir)!r} does not exist")
    if not entries:
        raise ValueError(f"{json_path} has no images in split {split!r}")
    items = []
    for entry in entries[:limit]:
        if not entry.captions:
            raise ValueError(f"RSICD image {entry.filename!r} has no captions")
        image = load_rgb(images_dir / entry.filename)
        items.append(RealImage(Path(entry.filename).stem, image, list(entry.captions), entry.scene_class or ""))
    return items


def iter_shard_tiles(shards: str) -> Iterator[RealImage]:
    """Tiles of webdataset shards in the embedded layout (``png``/``jpg`` + ``txt`` + ``json`` with ``gsd_m``)."""
    for sample in iter_samples(shards):
        meta = json.loads(sample["json"])
        data = sample.get("png") or sample.get("jpg")
        image = decode_rgb(data, sample["__key__"])
        gsd = meta.get("gsd_m")
        level = gsd_to_level(gsd) if gsd else float(meta.get("level", UNKNOWN_LEVEL))
        caption = sample["txt"].decode().strip()
        yield RealImage(sample["__key__"], image, [caption], meta.get("scene_class", ""), level, meta)


def read_shard_tiles(shards: str, limit: int | None = None, every: int = 1) -> list[RealImage]:
    """Every ``every``-th tile of the shards, at most ``limit`` of them (deterministic order)."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    items = []
    for i, item in enumerate(iter_shard_tiles(shards)):
        if i % every == 0:
            items.append(item)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise ValueError(f"no tiles in {shards!r}")
    return items
