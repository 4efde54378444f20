"""What the multi-process training tests add through Hydra. ``SeenKeys`` (``+callbacks.seen._target_=probes.SeenKeys``)
records which sample keys each optimizer step trained on, one JSON line per batch and rank, flushed at once so
that a run killed with SIGKILL leaves an exact record. ``CPUFSDPStrategy`` runs Lightning's FSDP on CPU ranks.
Lives beside the tests; the library never imports it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy


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


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy (torch FSDP1) on CPU processes with gloo, for tests only.

    Lightning refuses FSDP without CUDA (its check matches the exact class, so a subclass passes), and torch's
    FSDP1 needs ``device_id=cpu`` to accept CPU parameters, and full state dicts must not "offload" to the CPU
    (below). Everything else, wrapping, sharding, gathers, optimizer state, our EMA and export, is the
    production path.
    """

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if not any(isinstance(m, FSDP) for m in model.modules()):
            model = FSDP(
                module=model,
                cpu_offload=self.cpu_offload,
                mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy,
                device_id=torch.device("cpu"),
                **self.kwargs,
            )
            self.kwargs.pop("auto_wrap_policy", None)  # applied above; Lightning would warn about it
        return super()._setup_model(model)

    def setup_environment(self) -> None:
        # Lightning's full state dicts offload to the CPU; on CPU-resident shards that frees storage FSDP then
        # reads (a crash saving weights, wrong Adam moments on resume). Gather without the offload here.
        import lightning.pytorch.strategies.fsdp as lightning_fsdp

        lightning_fsdp._get_full_state_dict_context = _full_state_dict_context_without_offload
        super().setup_environment()


def _full_state_dict_context_without_offload(module: torch.nn.Module, world_size: int, rank0_only: bool = True):
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP.state_dict_type(
        module=module,
        state_dict_type=StateDictType.FULL_STATE_DICT,
        state_dict_config=FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        optim_state_dict_config=FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
    )


def console_script(tmp_path: Path) -> Path:
    """The installed `text2earth` script, or the same wrapper pip writes (so `sys.argv[0]` is a script path,
    as Lightning's relaunch of the other ranks expects)."""
    installed = Path(sys.executable).with_name("text2earth")
    if installed.exists():
        return installed
    script = tmp_path / "text2earth"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nfrom text2earth.cli.main import main\n"
        'if __name__ == "__main__":\n    sys.exit(main())\n'
    )
    script.chmod(0o755)
    return script


def launch_env() -> dict[str, str]:
    """This environment without a rendezvous address: Lightning then starts a local one on a free port (an
    address left by an earlier test, e.g. a SLURM node name, would make the ranks wait for it forever)."""
    return {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK")}
