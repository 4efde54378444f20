"""Evaluation during training: every N steps, FID / KID, CLIP score and resolution fidelity on a fixed prompt set.

Images come from the module's own networks with the EMA weights (no second copy in memory) through
``Text2EarthPipeline`` and are written under ``<run>/eval/step_N``. The real features, the feature network
and the level estimator (trained on real tiles through the frozen autoencoder) are built once and kept.
Off by default (``every_n_steps: 0``); does nothing on a module that is not plain text-to-image.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from callbacks.applies import samples_on_rank_zero
from callbacks.ema import find_ema
from callbacks.precision import training_autocast
from callbacks.steps import OptimizerStepCallback

METRICS = ("fid", "clip", "resolution")


class EvalMetrics(OptimizerStepCallback):
    def __init__(
        self,
        prompts: list[str],
        levels: list[float],
        every_n_steps: int = 0,
        metrics: list[str] = ("fid", "resolution"),
        images_per_prompt: int = 2,
        num_inference_steps: int = 20,
        guidance_scale: float = 4.0,
        batch_size: int = 32,
        seed: int = 0,
        real_shards: str | None = None,
        real_limit: int = 256,
        clip_model: str | None = None,
        estimator_shards: str | None = None,
        estimator_every: int = 3,
        estimator_epochs: int = 5,
        out_dir: str | None = None,
    ) -> None:
        unknown = sorted(set(metrics) - set(METRICS))
        if unknown:
            raise ValueError(f"EvalMetrics metrics must be among {list(METRICS)}, got {unknown}")
        if "fid" in metrics and not real_shards:
            raise ValueError("EvalMetrics: FID needs real_shards")
        if "clip" in metrics and not clip_model:
            raise ValueError("EvalMetrics: CLIP score needs clip_model (a local CLIP/SigLIP folder)")
        if "resolution" in metrics and not estimator_shards:
            raise ValueError("EvalMetrics: resolution fidelity needs estimator_shards (real tiles of known gsd)")
        self.prompts, self.levels = list(prompts), [float(v) for v in levels]
        self.every_n_steps = every_n_steps
        self.metrics = list(metrics)
        self.images_per_prompt = images_per_prompt
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.batch_size = batch_size
        self.seed = seed
        self.real_shards, self.real_limit = real_shards, real_limit
        self.clip_model = clip_model
        self.estimator_shards, self.estimator_every, self.estimator_epochs = (
            estimator_shards,
            estimator_every,
            estimator_epochs,
        )
        self.out_dir = out_dir
        self._extractor = self._real_features = self._estimator = None
        self.last: dict[str, float] = {}
        self.active = False  # set at fit start: on, applicable, and the weights are whole on rank 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.active = bool(self.every_n_steps) and samples_on_rank_zero(trainer, pl_module, "eval metrics")

    def on_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if self.active and step > 0 and step % self.every_n_steps == 0:
            self.evaluate(trainer, pl_module)

    @rank_zero_only
    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        from text2earth.eval.generation import generate_images, prompts_for
        from text2earth.pipelines.text2img import Text2EarthPipeline

        pipe = Text2EarthPipeline.from_components(pl_module.components)
        captions = [p for p in self.prompts for _ in self.levels]
        levels = [v for _ in self.prompts for v in self.levels]
        prompts = prompts_for(captions, [f"{v:.3f}" for v in levels], levels, self.images_per_prompt, self.seed)
        out = Path(self.out_dir or trainer.default_root_dir) / "eval" / f"step_{trainer.global_step:07d}"
        ema = find_ema(trainer)
        was_training = pl_module.training
        pl_module.eval()
        with ema.swapped(pl_module) if ema else contextlib.nullcontext(), training_autocast(trainer):
            generated = generate_images(
                pipe, prompts, out, self.batch_size, self.num_inference_steps, self.guidance_scale, "eval images"
            )
        pl_module.train(was_training)
        images = [g.load() for g in generated]
        values: dict[str, float] = {}
        if "fid" in self.metrics:
            values.update(self._fid(images))
        if "clip" in self.metrics:
            from text2earth.eval.clip_score import clip_score

            values["eval/clip_score"] = clip_score(images, [g.caption for g in generated], self.clip_model)[
                "clip_score"
            ]
        if "resolution" in self.metrics:
            values.update(self._resolution(pipe.vae, images, [g.level for g in generated]))
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        self.last = values
        return values

    def _fid(self, images: list) -> dict[str, float]:
        from text2earth.eval.datasets import read_shard_tiles
        from text2earth.eval.features import load_feature_extractor
        from text2earth.eval.fid_kid import extract_features, fid_kid

        if self._extractor is None:
            self._extractor = load_feature_extractor()
            real = [t.image for t in read_shard_tiles(self.real_shards, limit=self.real_limit)]
            self._real_features = extract_features(self._extractor, real, self.batch_size, "real features")
        fake = extract_features(self._extractor, images, self.batch_size, "eval features")
        result = fid_kid(self._real_features, fake, kid_subsets=50, seed=self.seed)
        return {"eval/fid": result["fid"], "eval/kid": result["kid_mean"]}

    def _resolution(self, vae: Any, images: list, levels: list[float]) -> dict[str, float]:
        from text2earth.eval.resolution_fidelity import estimate_levels, estimator_for_autoencoder, level_errors

        if self._estimator is None:  # the autoencoder is frozen: one estimator serves the whole run
            self._estimator, _ = estimator_for_autoencoder(
                vae, self.estimator_shards, self.estimator_every, epochs=self.estimator_epochs, seed=self.seed
            )
        result = level_errors(levels, estimate_levels(self._estimator, images))
        return {"eval/level_mae": result["mae_level"], "eval/level_acc_within_0.5": result["acc_within_0.5"]}
