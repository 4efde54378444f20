"""Resampling between the scenes' grids: area means, the Landsat pan / multispectral geometry, nearest pixel."""

from __future__ import annotations

import numpy as np

from data_modules.embedded.geo import GeoGrid


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Area average over ``factor`` x ``factor`` blocks (what a coarser sensor would integrate)."""
    if factor == 1:
        return array.astype(np.float32)
    h, w = array.shape[0] // factor * factor, array.shape[1] // factor * factor
    a = array[:h, :w].astype(np.float32)
    return a.reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


def half_shift_upsample(array: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear 2x upsampling where fine pixel ``j`` sits at coarse coordinate ``(j - 1) / 2``.

    That is the Landsat pan / multispectral geometry: pan pixel ``2i + 1`` is centred on MS pixel
    ``i``. Positions beyond the edge are clamped.
    """
    u = (np.arange(size) - 1) / 2.0
    lo = np.clip(np.floor(u).astype(int), 0, array.shape[axis] - 1)
    hi = np.clip(np.ceil(u).astype(int), 0, array.shape[axis] - 1)
    return 0.5 * (np.take(array, lo, axis=axis) + np.take(array, hi, axis=axis))


def upsample_ms_to_pan(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return half_shift_upsample(half_shift_upsample(array, shape[0], 0), shape[1], 1).astype(np.float32)


def pan_to_ms(pan: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area average of the pan band over each MS pixel: weights 1/4, 1/2, 1/4 on pan 2i, 2i+1, 2i+2."""
    out = pan.astype(np.float32)
    for axis, n in enumerate(shape):
        idx = np.arange(n) * 2
        take = [np.take(out, np.clip(idx + k, 0, out.shape[axis] - 1), axis=axis) for k in range(3)]
        out = 0.25 * take[0] + 0.5 * take[1] + 0.25 * take[2]
    return out


def nearest(array: np.ndarray, grid: GeoGrid, onto: GeoGrid) -> np.ndarray:
    """``array`` (on ``grid``) sampled at the pixel centres of the finer grid ``onto`` (nearest pixel)."""
    rows = np.floor((grid.y0 - (onto.y0 - (np.arange(onto.height) + 0.5) * onto.px)) / grid.px)
    cols = np.floor((onto.x0 + (np.arange(onto.width) + 0.5) * onto.px - grid.x0) / grid.px)
    rows = np.clip(rows, 0, grid.height - 1).astype(int)
    cols = np.clip(cols, 0, grid.width - 1).astype(int)
    return array[rows][:, cols]
