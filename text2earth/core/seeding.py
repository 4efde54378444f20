"""Explicit random streams: one seed per (run seed, purpose, rank, worker, step ...), never shared global state.

Every DDP rank and every DataLoader worker must draw its *own* noise, timesteps, dropout and masks (all ranks
seeded alike would train on 1/world_size of the draws), yet a run must replay exactly for a given world size.
A stream's seed is a stable hash of its coordinates, so it needs no state in checkpoints: a resumed run
re-derives the same streams from the step it resumes at.
"""

from __future__ import annotations

import hashlib
import os

import torch


def stream_seed(*coordinates: object) -> int:
    """A 63-bit seed from the coordinates of a stream, e.g. ``stream_seed(seed, "noise", rank, step)``.

    Stable across processes and Python runs (unlike ``hash()``, which is salted per process).
    """
    text = ":".join(str(c) for c in coordinates)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def run_seed(default: int = 0) -> int:
    """The run's seed: what ``lightning.seed_everything`` exported (``PL_GLOBAL_SEED``), else ``default``."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` (noise drawn on a GPU needs a GPU generator) seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)
