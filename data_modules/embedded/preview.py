"""A PNG grid of real tiles: one row per (source, gsd), varied scene classes, labelled with the gsd."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import PIL.Image

from text2earth.core.resolution import describe, gsd_to_level
from text2earth.io.images import decode_rgb, labelled_grid, save_png
from text2earth.io.shards import read_shard_samples


def _box_overlap(a: list[int], b: list[int]) -> float:
    """Intersection over the area of ``a`` for two pixel boxes of the same grid."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / max(1, (a[2] - a[0]) * (a[3] - a[1]))


def write_preview(shard_dir: str | Path, out_png: str | Path, per_level: int = 8, split: str = "train") -> Path:
    """A PNG grid of real tiles: one row per (source, gsd), varied scene classes, labelled with the gsd."""

    by_level: dict[tuple[str, float], list[tuple[dict, PIL.Image.Image]]] = defaultdict(list)
    for shard in sorted(Path(shard_dir).glob(f"{split}-*.tar")):
        for sample in read_shard_samples(shard):
            meta = json.loads(sample["json"])
            image = decode_rgb(sample["png"], str(shard))
            by_level[(meta["source"], meta["gsd_m"])].append((meta, image))
    if not by_level:
        raise FileNotFoundError(f"no {split}-*.tar shards in {shard_dir}")
    rows, labels = [], []
    for (source, gsd), items in sorted(by_level.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        items.sort(key=lambda it: (it[0]["box"][1], it[0]["box"][0]))
        # Round-robin over scene classes so a row shows the variety, evenly spread over the scene.
        groups: dict[str, list] = defaultdict(list)
        for it in items:
            groups[it[0]["scene_class"]].append(it)
        picked: list = []
        depth = 0
        while len(picked) < per_level and any(len(g) > depth for g in groups.values()):
            for g in groups.values():
                if len(g) <= depth or len(picked) >= per_level:
                    continue
                start = int(((depth * 0.618034) + 0.25) % 1.0 * len(g))  # spread over the scene
                # Overlapping strides make neighbours near-duplicates: take the first candidate that
                # overlaps no tile already shown by more than a quarter, else the least overlapping (under half).
                order = g[start:] + g[:start]
                overlap = [max((_box_overlap(it[0]["box"], p[0]["box"]) for p in picked), default=0.0) for it in order]
                best = next((i for i, o in enumerate(overlap) if o <= 0.25), int(np.argmin(overlap)))
                if overlap[best] < 0.5:
                    picked.append(order[best])
            depth += 1
        rows.append([img for _, img in picked])
        name = "Sentinel-2" if source == "sentinel2" else "Landsat-8"
        shown = f"{len(items)} tiles" if len(picked) == len(items) else f"{len(picked)} of {len(items)} tiles"
        if len(picked) < min(per_level, len(items)):  # the rest overlap a shown tile by half or more
            shown += ", the rest overlap these"
        labels.append(f"{name} {describe(gsd_to_level(gsd))}: {shown}")
    grid = labelled_grid(rows, row_labels=labels, cell_size=128, font_size=13)
    return save_png(grid, out_png)
