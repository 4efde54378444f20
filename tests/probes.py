"""A callback the training tests add through Hydra (``+callbacks.seen._target_=probes.SeenKeys``): it records
which sample keys each optimizer step trained on, one JSON line per batch and rank, flushed at once so that
a run killed with SIGKILL leaves an exact record. Lives beside the tests; the library never imports it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch


class SeenKeys(L.Callback):
    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self._noise: list[float] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The first draws of the stream this rank's training_step takes for this batch (same coordinates), so a
        # test can check that ranks draw differently in a real multi-process run.
        if hasattr(pl_module, "random_streams"):
            generator, _ = pl_module.random_streams("train", trainer.global_step, batch_idx)
            self._noise = torch.randn(4, generator=generator, device=generator.device).tolist()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, *_: Any
    ) -> None:
        # Runs before the checkpoint callback (Lightning orders those last): a line with step <= a
        # checkpoint's global_step was trained on before that checkpoint was written.
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f"keys_rank{trainer.global_rank}.jsonl", "a") as f:
            row = {"step": trainer.global_step, "keys": list(batch["key"]), "noise": self._noise}
            f.write(json.dumps(row) + "\n")


def read_seen(folder: Path, rank: int = 0, max_step: int | None = None) -> list[tuple[int, list[str]]]:
    """``(step, keys)`` per batch of one rank, in order; up to ``max_step`` when given."""
    path = Path(folder) / f"keys_rank{rank}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [(r["step"], r["keys"]) for r in rows if max_step is None or r["step"] <= max_step]


def read_noise(folder: Path, rank: int) -> dict[int, list[float]]:
    """The first noise draws of each optimizer step's first batch on one rank."""
    path = Path(folder) / f"keys_rank{rank}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["step"]: r["noise"] for r in reversed(rows)}
