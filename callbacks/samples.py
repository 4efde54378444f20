"""Sample-grid logger: every N steps, generate a fixed prompt x level grid with the EMA weights.

Does nothing on a module that is not plain text-to-image (inpainting, LoRA, ControlNet, enhancement):
the grid would say nothing about it, so callback sets need not leave it out by hand.

The pipeline shares the module's networks (no second copy in memory). The grid is written as a PNG
into the run folder and logged to wandb when a WandbLogger is attached.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from callbacks.applies import samples_on_rank_zero
from callbacks.ema import find_ema
from callbacks.precision import training_autocast
from callbacks.steps import OptimizerStepCallback
from text2earth.core.resolution import describe
from text2earth.io.images import labelled_grid, save_png


class SampleGridLogger(OptimizerStepCallback):
    def __init__(
        self,
        prompts: list[str],
        levels: list[float],
        every_n_steps: int = 500,
        num_inference_steps: int = 25,
        guidance_scale: float = 4.0,
        seed: int = 0,
        out_dir: str | None = None,
        at_train_end: bool = True,
    ) -> None:
        self.prompts = list(prompts)
        self.levels = [float(level) for level in levels]
        self.every_n_steps = every_n_steps
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.out_dir = out_dir
        self.at_train_end = at_train_end
        self.last_path: Path | None = None
        self.active = True

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = samples_on_rank_zero(trainer, pl_module, "sample grid")

    def on_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self.active and self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            self.log_grid(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.active and self.at_train_end:
            self.log_grid(trainer, pl_module)

    @rank_zero_only
    @torch.no_grad()
    def log_grid(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        from text2earth.pipelines.text2img import Text2EarthPipeline

        pipe = Text2EarthPipeline.from_components(pl_module.components)
        pipe.set_progress_bar_config(disable=True)  # no bars in the training log
        ema = find_ema(trainer)
        was_training = pl_module.training
        pl_module.eval()
        rows = []
        with ema.swapped(pl_module) if ema else contextlib.nullcontext(), training_autocast(trainer):
            for prompt in self.prompts:
                # Same seed in every column: only the level changes across a row.
                generators = [torch.Generator(device="cpu").manual_seed(self.seed) for _ in self.levels]
                out = pipe(
                    [prompt] * len(self.levels),
                    level=self.levels,
                    num_inference_steps=self.num_inference_steps,
                    guidance_scale=self.guidance_scale,
                    generator=generators,
                )
                rows.append(out.images)
        pl_module.train(was_training)
        grid = labelled_grid(rows, row_labels=self.prompts, col_labels=[describe(v) for v in self.levels])
        out_dir = Path(self.out_dir or trainer.default_root_dir) / "samples"
        path = save_png(grid, out_dir / f"step_{trainer.global_step:07d}.png", {"step": str(trainer.global_step)})
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                # No step=: wandb's own step counter runs ahead of ours and would drop the image.
                logger.experiment.log(
                    {
                        "samples": wandb.Image(grid, caption=f"step {trainer.global_step}"),
                        "trainer/global_step": trainer.global_step,
                    }
                )
        return path
