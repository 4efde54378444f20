"""Random training masks for inpainting: rectangles, ellipses, free-form brush strokes, or the whole image.

A full-image mask turns the sample into plain text-to-image training (nothing is known), which keeps
that ability in the inpainting model. Masks are ``(B, 1, H, W)`` float tensors of 0 / 1 (1 = repaint),
drawn with torch only, so a seeded ``torch.Generator`` makes them reproducible.
"""

from __future__ import annotations

import math

import torch

SHAPES = ("rectangle", "ellipse", "brush")


class MaskGenerator:
    """Draws one mask per image: the whole image with probability ``p_full``, else 1..``max_shapes``
    shapes, each chosen by ``weights`` (rectangle, ellipse, brush), sized as a fraction of the image side."""

    def __init__(
        self,
        p_full: float = 0.1,
        weights: dict[str, float] | None = None,
        max_shapes: int = 3,
        min_size: float = 0.15,
        max_size: float = 0.6,
        brush_width: tuple[float, float] = (0.05, 0.15),
        brush_vertices: tuple[int, int] = (3, 8),
    ) -> None:
        weights = dict(weights or {"rectangle": 1.0, "ellipse": 1.0, "brush": 1.0})
        unknown = set(weights) - set(SHAPES)
        if unknown:
            raise ValueError(f"unknown mask shapes {sorted(unknown)}; choose from {', '.join(SHAPES)}")
        if not 0.0 <= p_full <= 1.0:
            raise ValueError(f"p_full must be in [0, 1], got {p_full}")
        if not 0.0 < min_size <= max_size <= 1.0:
            raise ValueError(f"need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        if max_shapes < 1:
            raise ValueError(f"max_shapes must be at least 1, got {max_shapes}")
        self.p_full = float(p_full)
        self.shapes = [s for s in SHAPES if weights.get(s, 0.0) > 0]
        if not self.shapes and p_full < 1.0:
            raise ValueError("give at least one mask shape a positive weight")
        self.probs = torch.tensor([float(weights[s]) for s in self.shapes]) if self.shapes else None
        self.max_shapes = int(max_shapes)
        self.min_size, self.max_size = float(min_size), float(max_size)
        self.brush_width = tuple(float(w) for w in brush_width)
        self.brush_vertices = tuple(int(v) for v in brush_vertices)

    def __call__(self, batch: int, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        masks = torch.zeros(batch, 1, height, width)
        ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
        y, x = torch.meshgrid(ys, xs, indexing="ij")  # unit square coordinates of pixel centres
        for i in range(batch):
            if self._uniform(generator) < self.p_full:
                masks[i] = 1.0
                continue
            n = int(torch.randint(1, self.max_shapes + 1, (1,), generator=generator))
            for _ in range(n):
                shape = self.shapes[int(torch.multinomial(self.probs, 1, generator=generator))]
                masks[i, 0] = torch.maximum(masks[i, 0], getattr(self, f"_{shape}")(x, y, generator).float())
        return masks

    # -- shapes on the unit square: boolean (H, W) -------------------------------------------------
    def _uniform(self, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * float(torch.rand(1, generator=generator))

    def _size(self, generator: torch.Generator | None) -> float:
        return self._uniform(generator, self.min_size, self.max_size)

    def _rectangle(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        w, h = self._size(g), self._size(g)
        x0, y0 = self._uniform(g, 0, 1 - w), self._uniform(g, 0, 1 - h)
        return (x >= x0) & (x < x0 + w) & (y >= y0) & (y < y0 + h)

    def _ellipse(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        a, b = self._size(g) / 2, self._size(g) / 2
        cx, cy = self._uniform(g, a, 1 - a), self._uniform(g, b, 1 - b)
        angle = self._uniform(g, 0, math.pi)
        cos, sin = math.cos(angle), math.sin(angle)
        u = (x - cx) * cos + (y - cy) * sin
        v = -(x - cx) * sin + (y - cy) * cos
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    def _brush(self, x: torch.Tensor, y: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """A random walk of thick segments (round caps), like the free-form masks of LaMa / SD-inpainting."""
        radius = self._uniform(g, *self.brush_width) / 2
        n_vertices = int(torch.randint(self.brush_vertices[0], self.brush_vertices[1] + 1, (1,), generator=g))
        px, py = self._uniform(g), self._uniform(g)
        stroke = torch.zeros_like(x, dtype=torch.bool)
        for _ in range(n_vertices):
            angle = self._uniform(g, 0, 2 * math.pi)
            length = self._size(g)
            qx = min(max(px + length * math.cos(angle), 0.0), 1.0)
            qy = min(max(py + length * math.sin(angle), 0.0), 1.0)
            stroke |= _segment_distance(x, y, px, py, qx, qy) <= radius
            px, py = qx, qy
        return stroke


def _segment_distance(x: torch.Tensor, y: torch.Tensor, ax: float, ay: float, bx: float, by: float) -> torch.Tensor:
    """Distance of every point to the segment a-b."""
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = torch.zeros_like(x) if length2 == 0 else (((x - ax) * dx + (y - ay) * dy) / length2).clamp(0, 1)
    return torch.hypot(x - (ax + t * dx), y - (ay + t * dy))
