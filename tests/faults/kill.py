"""The checkpoint callback of a run the fault tests kill: SIGKILL right after the step file of one step is
written and before ``last.ckpt`` is (the one moment a kill could lose the step or duplicate a file)."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L

from callbacks.checkpoint import AtomicModelCheckpoint


class KillBetweenCheckpoints(AtomicModelCheckpoint):
    def __init__(self, *args: Any, kill_at_step: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kill_at_step = kill_at_step

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if trainer.global_step == self.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        super()._save_last_checkpoint(trainer, monitor_candidates)
