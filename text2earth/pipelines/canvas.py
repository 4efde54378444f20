"""Canvas bookkeeping for unbounded scenes: where the tiles go, and how visible their seams are.

Pure numpy, no model: the outpainting pipelines use these, and so do the tests and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tile_positions(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length``: steps of ``tile - overlap``, the last one flush with the end.

    Neighbours overlap by at least ``overlap`` (the last pair by more when the length does not divide).
    """
    if tile <= 0 or overlap < 0:
        raise ValueError(f"tile must be positive and overlap non-negative, got tile={tile}, overlap={overlap}")
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    if length < tile:
        raise ValueError(f"canvas side {length} is smaller than the tile ({tile})")
    positions = list(range(0, length - tile + 1, tile - overlap))
    if positions[-1] != length - tile:
        positions.append(length - tile)
    return positions


def tile_grid(width: int, height: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """``(x, y)`` of every tile, row by row, left to right: the order a canvas grows in."""
    xs, ys = tile_positions(width, tile, overlap), tile_positions(height, tile, overlap)
    return [(x, y) for y in ys for x in xs]


def check_canvas(width: int, height: int, tile: int, overlap: int, multiple: int) -> None:
    """One-line errors for sizes the VAE cannot take (every offset must fall on a latent pixel)."""
    for name, value in (("width", width), ("height", height), ("tile", tile), ("overlap", overlap)):
        if not isinstance(value, int) or value < 0 or value % multiple:
            raise ValueError(f"{name} must be a non-negative multiple of {multiple} pixels, got {value!r}")
    tile_grid(width, height, tile, overlap)  # raises for tile/overlap/canvas mismatches


@dataclass(frozen=True)
class SeamReport:
    """Mean absolute neighbour difference across tile edges (``seam``) and everywhere else (``inside``)."""

    seam: float
    inside: float

    @property
    def ratio(self) -> float:
        """``seam / inside``: 1.0 means the seams are as smooth as the image itself (invisible)."""
        return self.seam / self.inside if self.inside > 0 else float("inf")


def seam_visibility(image: np.ndarray, tiles: list[tuple[int, int]], tile: int) -> SeamReport:
    """Seam metric of a canvas (H, W[, C]) built from ``tiles`` of side ``tile``.

    The gradient magnitude of a pair of neighbouring pixels is their absolute difference (mean over
    channels). Pairs that straddle a tile edge inside the canvas are seam pairs (vertical edges for
    horizontal neighbours, horizontal edges for vertical ones); all other pairs are inside pairs.
    """
    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width = pixels.shape[:2]
    gx = np.abs(np.diff(pixels, axis=1)).mean(axis=-1)  # (H, W-1): pair (x-1, x) at index x-1
    gy = np.abs(np.diff(pixels, axis=0)).mean(axis=-1)  # (H-1, W)
    seam_x = np.zeros(width - 1, dtype=bool)
    seam_y = np.zeros(height - 1, dtype=bool)
    for x, y in tiles:
        for edge in (x, x + tile):
            if 0 < edge < width:
                seam_x[edge - 1] = True
        for edge in (y, y + tile):
            if 0 < edge < height:
                seam_y[edge - 1] = True
    seam = np.concatenate([gx[:, seam_x].ravel(), gy[seam_y, :].ravel()])
    inside = np.concatenate([gx[:, ~seam_x].ravel(), gy[~seam_y, :].ravel()])
    if seam.size == 0:
        raise ValueError("the canvas has no tile edges inside it (a single tile): no seams to measure")
    return SeamReport(seam=float(seam.mean()), inside=float(inside.mean()))
