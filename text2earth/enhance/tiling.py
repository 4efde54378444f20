"""Tiled inference: any image size through an RRDBNet with bounded device memory.

Each tile is run with ``overlap`` pixels of real image context on every side and only its centre is kept, so
there is no blending: once ``overlap`` covers the network's receptive field the result is the whole-image
result (see :func:`receptive_radius`); below that the difference is small because the far context of a deep
residual network carries little weight. Tile and context origins sit on the pixel-unshuffle grid so the
folded channels line up with whole-image inference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from text2earth.models.rrdbnet import RRDBConfig, RRDBNet


def receptive_radius(config: RRDBConfig) -> int:
    """Input pixels on each side that can influence one output pixel (an upper bound)."""
    fold = {4: 1, 2: 2, 1: 4}[config.scale]
    # 3x3 convs at the folded resolution: conv_first, 15 per RRDB, conv_body; then one at 2x and three at 4x
    # the folded resolution; plus up to one folded pixel for the nearest-neighbour upsampling.
    trunk = (2 + 15 * config.num_block) * fold
    return math.ceil(trunk + fold / 2 + 3 * fold / 4 + fold)


def _starts(size: int, tile: int) -> list[int]:
    return list(range(0, size, tile))


def _jobs(batch: int, height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[int, ...]]:
    """(image, tile y0, y1, x0, x1, context y0, y1, x0, x1) for every tile of every image."""
    for b in range(batch):
        for y0 in _starts(height, tile):
            for x0 in _starts(width, tile):
                y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
                cy0, cx0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
                cy1, cx1 = min(y1 + overlap, height), min(x1 + overlap, width)
                yield b, y0, y1, x0, x1, cy0, cy1, cx0, cx1


@torch.inference_mode()
def upscale(
    net: RRDBNet,
    images: torch.Tensor,
    tile: int | None = 256,
    overlap: int = 16,
    batch_size: int = 16,
) -> torch.Tensor:
    """Upscale ``images`` (B, C, H, W) float in [0, 1] on any device; returns float32 on ``images``' device.

    Pieces of at most ``tile`` x ``tile`` pixels (plus ``overlap`` context) are moved to the network's device
    and dtype ``batch_size`` at a time; the full-size result is assembled where ``images`` lives (keep that
    on the CPU for huge images). ``tile=None`` (or an image no larger than ``tile``) runs whole images.
    Output is clamped to [0, 1].
    """
    if images.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(images.shape)}")
    param = next(net.parameters())
    scale, fold = net.scale, net.unshuffle
    b, c, h, w = images.shape
    # Pixel-unshuffle needs sizes divisible by the fold; pad on the bottom/right and crop the output after.
    pad_h, pad_w = (-h) % fold, (-w) % fold
    x = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else images
    hp, wp = x.shape[-2:]
    if tile is None or (hp <= tile and wp <= tile):
        tile, overlap = max(hp, wp), 0
    tile = max(fold, tile - tile % fold)
    overlap = math.ceil(overlap / fold) * fold
    out = torch.empty(b, c, hp * scale, wp * scale, dtype=torch.float32, device=images.device)

    # Border tiles have smaller contexts; group jobs by context shape so each forward call is one stacked batch.
    groups: dict[tuple[int, int], list[tuple[int, ...]]] = defaultdict(list)
    for job in _jobs(b, hp, wp, tile, overlap):
        groups[(job[6] - job[5], job[8] - job[7])].append(job)
    for jobs in groups.values():
        for i in range(0, len(jobs), batch_size):
            chunk = jobs[i : i + batch_size]
            crops = torch.stack([x[j[0], :, j[5] : j[6], j[7] : j[8]] for j in chunk])
            result = net(crops.to(param.device, param.dtype)).clamp_(0, 1).float().to(images.device)
            for k, (bi, y0, y1, x0, x1, cy0, _, cx0, _) in enumerate(chunk):
                oy, ox = (y0 - cy0) * scale, (x0 - cx0) * scale
                out[bi, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = result[
                    k, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
                ]
    return out[:, :, : h * scale, : w * scale]
