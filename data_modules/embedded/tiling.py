"""Train / val split of each scene (one held-out band for every level) and the tile boxes of each level."""

from __future__ import annotations

import math

from data_modules.embedded.scenes import Level, Scene

MIN_STRIDE_DIVISOR = 16  # overlapping strides go down to tile/16 (4 px for 64 px tiles), not lower


def _positions(start: int, stop: int, tile: int, stride: int) -> list[int]:
    """Tile origins in ``[start, stop)``, the remainder split evenly between both ends."""
    if stop - start < tile:
        return []
    n = (stop - start - tile) // stride + 1
    offset = start + (stop - start - tile - (n - 1) * stride) // 2
    return [offset + i * stride for i in range(n)]


def _region_ranges(level: Level, side: str, split: float, tile: int) -> dict[str, tuple[int, int]]:
    """Pixel ranges along the split axis that lie entirely in the train / val region."""
    g = level.grid
    if side == "bottom":  # val south of northing ``split``: rows with y <= split
        cut = (g.y0 - split) / g.px
        return {"train": (0, math.floor(cut + 1e-9)), "val": (math.ceil(cut - 1e-9), g.height)}
    if side == "right":  # val east of easting ``split``
        cut = (split - g.x0) / g.px
        return {"train": (0, math.floor(cut + 1e-9)), "val": (math.ceil(cut - 1e-9), g.width)}
    raise ValueError(f"val_side must be 'bottom' or 'right', got {side!r}")


def choose_split(scene: Scene, tile: int, val_fraction: float) -> tuple[float, list[str]]:
    """The split coordinate (a northing or easting) of the scene's held-out band, and notes.

    The band is at least ``val_fraction`` of the scene, widened (finest level first) so that every
    level whose tile fits on *both* sides still gets at least one row of val tiles. Levels whose
    tile footprint is too large for that stay train-only. One band serves all levels, so a val
    tile never overlaps a train tile at any resolution.
    """
    b = scene.base
    if scene.val_side == "bottom":
        extent, scene_edge = b.height * b.px, b.y0 - b.height * b.px
        split = scene_edge + val_fraction * extent
    else:
        extent, scene_edge = b.width * b.px, b.x0 + b.width * b.px
        split = scene_edge - val_fraction * extent
    notes = []
    for level in sorted(scene.levels, key=lambda lv: lv.gsd_m):
        g = level.grid
        if scene.val_side == "bottom":  # lowest split that leaves one val row on this grid
            needed = g.y0 - (g.height - tile) * g.px
            candidate = max(split, needed)
        else:
            needed = g.x0 + (g.width - tile) * g.px
            candidate = min(split, needed)
        ranges = _region_ranges(level, scene.val_side, candidate, tile)
        if ranges["train"][1] - ranges["train"][0] >= tile and ranges["val"][1] - ranges["val"][0] >= tile:
            split = candidate
        else:
            notes.append(
                f"{level.gsd_m:g} m: no val tiles (a {tile * g.px / 1000:.2f} km tile does not fit on both sides "
                f"of a {extent / 1000:.1f} km scene); train only"
            )
    return split, notes


def choose_stride(train_shape: tuple[int, int], tile: int, target: int) -> int:
    """Largest stride (<= tile, >= tile/16) that gives at least ``target`` train tiles."""
    min_stride = max(1, tile // MIN_STRIDE_DIVISOR)
    for stride in range(tile, min_stride - 1, -1):
        rows = len(_positions(0, train_shape[0], tile, stride))
        cols = len(_positions(0, train_shape[1], tile, stride))
        if rows * cols >= target:
            return stride
    return min_stride


def tile_boxes(
    level: Level, side: str, split: float, tile: int, target: int
) -> dict[str, list[tuple[int, int, int, int]]]:
    g = level.grid
    ranges = _region_ranges(level, side, split, tile)
    train_len = ranges["train"][1] - ranges["train"][0]
    train_shape = (train_len, g.width) if side == "bottom" else (g.height, train_len)
    level.stride = choose_stride(train_shape, tile, target)
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    for split_name, (start, stop) in ranges.items():
        along = _positions(start, stop, tile, level.stride)
        across = _positions(0, g.width if side == "bottom" else g.height, tile, level.stride)
        if side == "bottom":
            out[split_name] = [(c, r, c + tile, r + tile) for r in along for c in across]
        else:
            out[split_name] = [(c, r, c + tile, r + tile) for c in along for r in across]
    return out
