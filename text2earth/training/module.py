"""LatentDiffusionModule: the Lightning training module for Text2Earth-style latent diffusion.

Frozen VAE and text encoder, trainable UNet conditioned on caption (cross-attention) and zoom level
(class embedding). The module is built from plain config (``_recursive_: false`` in Hydra) so a
checkpoint alone rebuilds it: ``LatentDiffusionModule.load_from_checkpoint(path)``.

Batch contract (see data_modules): ``pixel_values`` (B,3,H,W in [-1,1]) *or* ``latents`` (B,4,h,w,
already multiplied by the VAE scaling factor: a latent cache skips the VAE; with ``latents_std`` they are
the posterior mean and std, sampled here), ``caption`` (list of str) *or* ``encoder_hidden_states`` (cached
text features), ``level`` (B floats, 0 = unknown), and for an inpainting UNet ``mask`` (B,1,H,W, 1 = repaint),
drawn in the DataLoader workers (``ShardDataModule(masks=...)``).

Randomness: every draw (noise, timesteps, caption/level dropout, VAE posterior samples) comes from
generators seeded by (seed, global rank, optimizer step, batch index) -- see :meth:`random_streams` --
so DDP ranks draw differently and a run (or a resumed one) replays exactly for a given world size.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from text2earth.core.config import make_hparams_plain
from text2earth.core.seeding import run_seed, seeded_generator, stream_seed
from text2earth.io.files import atomic_directory
from text2earth.models.components import Components, build_components, save_folder
from text2earth.models.conditioning import drop_conditions, encode_ids, encode_text, level_class_labels, tokenize
from text2earth.models.controlnet import controlled_prediction
from text2earth.models.inpainting import inpaint_model_input, is_inpainting_unet, mask_and_masked_latents
from text2earth.models.level_range import record_level_range
from text2earth.models.losses import diffusion_target, min_snr_weights, sample_noise
from text2earth.training.optim import configure_optimization
from text2earth.training.sharding import clip_sharded_grad_norm
from text2earth.training.variants import build_variant, export_variant

FROZEN_PARTS = ("vae", "text_encoder")


class LatentDiffusionModule(L.LightningModule):
    def __init__(
        self,
        components: dict[str, Any],
        optimizer: dict[str, Any],
        lr_scheduler: dict[str, Any] | None = None,
        p_text: float = 0.1,
        p_level: float = 0.1,
        snr_gamma: float | None = 5.0,
        noise_offset: float = 0.0,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        save_frozen_in_checkpoint: bool = True,
        lora: dict[str, Any] | None = None,
        controlnet: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        make_hparams_plain(self.hparams)
        parts: Components = build_components(**self.hparams.components)
        self.vae = parts.vae
        self.text_encoder = parts.text_encoder
        self.unet = parts.unet
        # A 9-channel UNet trains on random masks, drawn in the DataLoader workers (batch["mask"]).
        self.is_inpainting = is_inpainting_unet(self.unet)
        self.tokenizer = parts.tokenizer
        self.level_scale = parts.level_scale
        # Training always uses the DDPM forward process of the model's own beta schedule.
        self.noise_scheduler = DDPMScheduler.from_config(parts.scheduler.config)
        for frozen in (self.vae, self.text_encoder):
            frozen.requires_grad_(False)
            frozen.eval()
        self.unet.set_attn_processor(AttnProcessor2_0())  # PyTorch SDPA kernels
        # Task variants (text2earth.training.variants): a LoRA on the UNet (cross-modal generation) or a
        # ControlNet beside it (translation); either way the UNet's own weights stay frozen.
        self.controlnet = build_variant(self.unet, self.vae, lora, controlnet)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if compile:
            self.unet.compile()  # in place: state-dict keys stay those of the plain UNet
        # Frozen weights that come from a folder are rebuilt from config on load, not re-saved.
        self.strict_loading = save_frozen_in_checkpoint
        self._null_text: torch.Tensor | None = None
        # fp32 copies (CPU) of the frozen parts while fit runs them in bf16/fp16: what checkpoints and exports hold.
        self._frozen_masters: dict[str, dict[str, torch.Tensor]] | None = None
        # Samples per level trained on (this rank's batches), kept in checkpoints: export records the range.
        self.level_histogram: Counter[float] = Counter()

    # -- frozen parts -----------------------------------------------------------------------------
    def train(self, mode: bool = True) -> LatentDiffusionModule:
        super().train(mode)
        for frozen in (self.vae, self.text_encoder):
            frozen.eval()  # never leave eval mode, whatever Lightning toggles
        return self

    def on_fit_start(self) -> None:
        # Under bf16/fp16 mixed precision the frozen nets run entirely in that dtype: half the memory. Their
        # exact source weights stay on the CPU, for checkpoints and exports (rounded copies must not leak).
        dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(self.trainer.precision))
        if dtype is not None and self._frozen_masters is None:
            self._frozen_masters = {
                name: {k: v.detach().to("cpu", copy=True) for k, v in getattr(self, name).state_dict().items()}
                for name in FROZEN_PARTS
            }
            self.vae.to(dtype=dtype)
            self.text_encoder.to(dtype=dtype)

    def on_fit_end(self) -> None:
        self.restore_frozen_weights()

    def restore_frozen_weights(self) -> None:
        """Put the exact source weights (fp32) back into the frozen parts after a reduced-precision fit."""
        if self._frozen_masters is None:
            return
        for name, state in self._frozen_masters.items():
            part = getattr(self, name).float()  # upcast first: loading into bf16 params would round again
            part.load_state_dict(state)
        self._frozen_masters = None
        self._null_text = None

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.level_histogram = Counter({float(k): v for k, v in checkpoint.get("level_histogram", {}).items()})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["level_histogram"] = {f"{level:g}": n for level, n in sorted(self.level_histogram.items())}
        state = checkpoint["state_dict"]
        if not self.hparams.save_frozen_in_checkpoint:
            for key in [k for k in state if k.split(".", 1)[0] in FROZEN_PARTS]:
                del state[key]
        elif self._frozen_masters is not None:
            for name, master in self._frozen_masters.items():
                state.update({f"{name}.{k}": v for k, v in master.items()})

    @property
    def components(self) -> Components:
        """The current parts, for pipelines and export (shared, not copied)."""
        scheduler = EulerDiscreteScheduler.from_config(self.noise_scheduler.config)
        return Components(self.vae, self.text_encoder, self.tokenizer, self.unet, scheduler, self.level_scale)

    # -- randomness -------------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """The run's seed: the ``seed`` hparam, else what ``seed_everything`` exported (train() calls it)."""
        return run_seed() if self.hparams.seed is None else int(self.hparams.seed)

    def random_streams(
        self, kind: str, *coordinates: int, rank: int | None = None
    ) -> tuple[torch.Generator, torch.Generator]:
        """``(device, cpu)`` generators for one batch, seeded by (seed, kind, global rank, *coordinates).

        Training uses (optimizer step, batch index): every rank and micro-batch gets its own stream and a
        resumed run re-derives the streams of the steps it has not done yet, with no generator state to save.
        The CPU generator draws the small per-sample decisions (caption/level dropout).
        """
        rank = self.global_rank if rank is None else rank
        seed = stream_seed(self.seed, kind, rank, *coordinates)
        return seeded_generator(seed, self.device), seeded_generator(seed)

    # -- conditioning -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        pixels = pixel_values.to(device=self.device, dtype=self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.sample(generator=generator)
        return latents.float() * self.vae.config.scaling_factor

    def null_text_embedding(self) -> torch.Tensor:
        if self._null_text is None or self._null_text.device != self.device:
            self._null_text = encode_text(self.text_encoder, self.tokenizer, [""], self.device).float()
        return self._null_text

    def conditions(
        self, batch: dict[str, Any], drop: bool, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text features and class labels for a batch, with independent dropout (CPU ``generator``) when ``drop``."""
        levels = torch.as_tensor(batch["level"], dtype=torch.float32, device=self.device)
        p_text, p_level = (self.hparams.p_text, self.hparams.p_level) if drop else (0.0, 0.0)
        cached = "encoder_hidden_states" in batch  # cached text: only which captions drop matters
        captions = [" "] * len(levels) if cached else batch["caption"]
        captions, levels = drop_conditions(captions, levels, p_text, p_level, generator)
        dropped = torch.tensor([c == "" for c in captions], device=self.device)
        if cached:
            text = batch["encoder_hidden_states"].to(self.device).float()
            text = torch.where(dropped[:, None, None], self.null_text_embedding().expand_as(text), text)
        elif "input_ids" in batch:  # tokenised in the DataLoader workers: a dropped caption gets the empty prompt's ids
            ids = batch["input_ids"].to(self.device)
            ids = torch.where(dropped[:, None], tokenize(self.tokenizer, [""]).to(self.device), ids)
            text = encode_ids(self.text_encoder, ids).float()
        else:
            text = encode_text(self.text_encoder, self.tokenizer, captions, self.device).float()
        return text, level_class_labels(levels, self.level_scale).to(self.device)

    # -- objective --------------------------------------------------------------------------------
    def diffusion_loss(
        self,
        batch: dict[str, Any],
        drop: bool = True,
        generator: torch.Generator | None = None,
        cpu_generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The loss of one batch. ``generator`` (on the module's device) draws the VAE posterior samples,
        noise and timesteps; ``cpu_generator`` the dropout (default: ``generator`` when that is on the CPU)."""
        if cpu_generator is None and generator is not None and generator.device.type == "cpu":
            cpu_generator = generator
        if "latents" in batch:
            latents = batch["latents"].to(self.device).float()
            if "latents_std" in batch:  # a posterior cache: the same mean + std * noise draw the VAE path takes
                std = batch["latents_std"].to(self.device).float()
                latents = latents + std * sample_noise(latents, 0.0, generator)
        else:
            latents = self.encode_images(batch["pixel_values"], generator)
        text, class_labels = self.conditions(batch, drop, cpu_generator)
        noise = sample_noise(latents, self.hparams.noise_offset, generator)
        n_steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, n_steps, (latents.shape[0],), device=self.device, generator=generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = self.predict(noisy, timesteps, text, class_labels, batch, generator)
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        weights = min_snr_weights(self.noise_scheduler, timesteps, self.hparams.snr_gamma)
        return (per_sample * weights).mean()

    def predict(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        text: torch.Tensor,
        class_labels: torch.Tensor,
        batch: dict[str, Any],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The network's output for noisy latents: the one place task variants (extra input channels,
        control residuals) hook into the shared training step."""
        if self.controlnet is not None:
            return controlled_prediction(
                self.unet, self.controlnet, noisy, timesteps, text, class_labels, batch["conditioning"]
            )
        if self.is_inpainting:
            noisy = inpaint_model_input(noisy, *self.inpainting_inputs(batch, generator))
        return self.unet(noisy, timesteps, encoder_hidden_states=text, class_labels=class_labels).sample

    def inpainting_inputs(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's masks (drawn in the DataLoader workers) as mask channel and masked-image latent."""
        if "pixel_values" not in batch:
            raise ValueError(
                "inpainting trains from pixel batches (the masked image needs the VAE), not cached latents"
            )
        if "mask" not in batch:
            raise ValueError(
                "an inpainting UNet trains on batch['mask']: set data.masks (MaskGenerator settings, "
                "text2earth/models/masks.py) so the DataLoader workers draw them"
            )
        pixels = batch["pixel_values"].to(self.device)
        return mask_and_masked_latents(self.vae, pixels, batch["mask"].to(self.device), generator)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        generator, cpu_generator = self.random_streams("train", self.global_step, batch_idx)
        loss = self.diffusion_loss(batch, drop=True, generator=generator, cpu_generator=cpu_generator)
        batch_size = len(batch["level"])
        # The levels trained on (before dropout); export records their range in the model folder.
        self.level_histogram.update(round(float(v), 3) for v in torch.as_tensor(batch["level"]).flatten().tolist())
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        # Fixed noise and timesteps per (rank, batch index), so val/loss curves compare across steps.
        generator, cpu_generator = self.random_streams("val", batch_idx)
        loss = self.diffusion_loss(batch, drop=False, generator=generator, cpu_generator=cpu_generator)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["level"]))
        return loss

    # -- optimisation -----------------------------------------------------------------------------
    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        # Lightning's FSDP precision refuses norm clipping; FSDP1 computes the norm across shards itself.
        if clip_sharded_grad_norm(self.trainer.strategy, gradient_clip_val, gradient_clip_algorithm):
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]  # UNet, or only a LoRA / ControlNet
        return configure_optimization(self, params, self.hparams.optimizer, self.hparams.lr_scheduler)

    # -- export -----------------------------------------------------------------------------------
    def export(self, folder: str | Path, dtype: torch.dtype | None = None, variant: str | None = None) -> Path:
        """Write a diffusers folder in the published layout (safetensors) that pipelines load.

        ``dtype``/``variant`` write half-precision weights under diffusers' variant names (``*.fp16.safetensors``).
        """
        self.float()  # folders hold fp32 weights, whatever precision training ran in (end of training)
        self.restore_frozen_weights()  # the frozen parts' exact source weights, not bf16-rounded copies
        if self.hparams.lora or self.controlnet is not None:  # an adapter / translator folder, not a model
            return export_variant(self, folder)
        class_name = "Text2EarthInpaintPipeline" if self.is_inpainting else "Text2EarthPipeline"
        with atomic_directory(folder) as tmp:
            save_folder(self.components, tmp, class_name, dtype=dtype, variant=variant)
            record_level_range(tmp, self.level_histogram)
        return Path(folder)
