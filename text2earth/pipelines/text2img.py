"""Text-to-image at a chosen ground resolution: the Text2Earth pipeline.

Computes what the published Text2Earth pipeline computes (same prompt format, same null condition,
same guidance) and adds: resolution as ``gsd_m`` or ``level`` (scalar or per prompt), any number of
images per prompt, a separate level guidance scale, sampler choice by name, and loading from any
local folder in the published layout whatever pipeline class its ``model_index.json`` names.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from text2earth.core.resolution import UNKNOWN_LEVEL, parse_prompt, resolve_levels
from text2earth.models.components import Components, load_from_folder
from text2earth.models.inpainting import is_inpainting_unet
from text2earth.pipelines.fast import FastSampling, device_timesteps, enable_fast_sampling
from text2earth.pipelines.guidance import make_guider
from text2earth.pipelines.sampling import (
    Predictor,
    StepCallback,
    build_conditions,
    denoise,
    prepare_latents,
    step_kwargs,
    unet_predictor,
)
from text2earth.pipelines.schedulers import make_scheduler

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class Text2EarthPipelineOutput(BaseOutput):
    """``images`` in the requested type; ``levels`` and ``prompts`` (caption, prefix removed), one per image."""

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    levels: list[float]
    prompts: list[str]


@dataclass(frozen=True)
class SamplingRequest:
    """One sampling run, after prompt parsing: what :meth:`Text2EarthPipeline.denoise_latents` and
    :meth:`~Text2EarthPipeline.latents_to_output` need (``captions`` without prefix, one level each)."""

    captions: list[str]
    levels: list[float]
    height: int
    width: int
    num_inference_steps: int = 50
    guidance_scale: float = 4.0
    level_guidance_scale: float | None = None
    negative_prompt: str | list[str] | None = None
    num_images_per_prompt: int = 1
    generator: torch.Generator | list[torch.Generator] | None = None
    latents: torch.Tensor | None = None  # initial noise (unscaled); None draws it from ``generator``
    output_type: str = "pil"


def decode_latents(
    vae: AutoencoderKL, latents: torch.Tensor, generator: torch.Generator | list[torch.Generator] | None = None
) -> torch.Tensor:
    """Unscaled latents -> [-1, 1] pixels, fp16-safe: SD2's VAE decoder overflows fp16 (its mid-block
    activations pass 65504), so an fp16 decode that comes out non-finite is redone in fp32."""
    # The VAE may hold another dtype than the UNet (a bf16-mixed training module keeps the frozen
    # VAE in bf16 and the UNet in fp32): the latents go in as the VAE's dtype.
    scaled = latents / vae.config.scaling_factor
    decoded = vae.decode(scaled.to(vae.dtype), return_dict=False, generator=generator)[0]
    if vae.dtype == torch.float16 and not torch.isfinite(decoded).all():
        with torch.autocast(device_type=latents.device.type, enabled=False):
            vae.to(torch.float32)
            try:
                decoded = vae.decode(scaled.float(), return_dict=False, generator=generator)[0]
            finally:
                vae.to(torch.float16)
    return decoded


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


class Text2EarthPipeline(DiffusionPipeline):
    """Stable-Diffusion-2 latent diffusion with Text2Earth's zoom-level class embedding."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    inpainting = False  # which UNet from_pretrained accepts: 4 input channels here, 9 for inpainting

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: Any,
        level_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        # In the config so that save_pretrained writes it into model_index.json (load_from_folder reads it back).
        self.register_to_config(level_scale=float(level_scale))
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.fast: FastSampling | None = None  # set by enable_fast_sampling

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_components(cls, components: Components, scheduler: str | None = None) -> Text2EarthPipeline:
        """A pipeline over already built parts; ``scheduler`` names a sampler to use instead of theirs."""
        sampler = components.scheduler
        if scheduler is not None:
            sampler = make_scheduler(scheduler, components.scheduler.config)
        return cls(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            scheduler=sampler,
            level_scale=components.level_scale,
        )

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        scheduler: str | None = None,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
    ) -> Text2EarthPipeline:
        """Load a local folder in the published layout (never the network).

        Uses the folder's own scheduler unless ``scheduler`` names one of ``SCHEDULERS``; ``variant``
        (``fp16``, ``bf16``) reads the half-precision weight files ``text2earth export --dtype`` writes.
        A missing folder or a hub id raises :class:`~text2earth.models.components.ModelFolderError`.
        """
        components = load_from_folder(folder, torch_dtype=torch_dtype, inpainting=cls.inpainting, variant=variant)
        return cls.from_components(components, scheduler=scheduler)

    def enable_fast_sampling(
        self,
        compile: bool = True,
        cuda_graphs: bool = True,
        channels_last: bool = True,
        fuse_qkv: bool = True,
        backend: str = "inductor",
    ) -> FastSampling:
        """Compiled UNet and VAE decoder (static shapes), CUDA graphs where the device has them, fused QKV,
        channels-last, scheduler tables on the host. Call after ``.to(device)``; returns what was applied
        (also ``self.fast``, whose :meth:`~FastSampling.summary` reports warm-up and compilations)."""
        self.fast = enable_fast_sampling(self.unet, self.vae, compile, cuda_graphs, channels_last, fuse_qkv, backend)
        return self.fast

    def _tracked(self, new_call: bool) -> contextlib.AbstractContextManager:
        return self.fast.track(new_call) if self.fast is not None else contextlib.nullcontext()

    # ----------------------------------------------------------------------------------------- inputs
    def _split_prompts(
        self,
        prompt: str | list[str],
        level: float | Sequence[float | None] | None,
        gsd_m: float | Sequence[float | None] | None,
    ) -> tuple[list[str], list[float]]:
        """Captions without the ``{L}_GOOGLE_LEVEL_`` prefix, and one level per prompt."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if _is_sequence(prompt) else None
        if not prompts:
            raise ValueError("prompt must be a string or a non-empty list of strings")
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"every prompt must be a string, got {[type(p).__name__ for p in prompts]}")
        parsed = [parse_prompt(p) for p in prompts]
        captions = [caption for caption, _ in parsed]
        n = len(prompts)
        explicit = level if level is not None else gsd_m
        given_levels = resolve_levels(n, level, gsd_m)
        # Which prompts had a level given explicitly (a ``None`` inside a per-prompt list means "not given").
        given = [v is not None for v in explicit] if _is_sequence(explicit) else [explicit is not None] * n
        levels = []
        for i, (caption_level, has_given) in enumerate(zip((lv for _, lv in parsed), given, strict=True)):
            if has_given:
                if caption_level is not None and not math.isclose(caption_level, given_levels[i], abs_tol=1e-6):
                    raise ValueError(
                        f"prompt {i} carries level {caption_level:g} in its prefix but level {given_levels[i]:g} "
                        "was given explicitly"
                    )
                levels.append(given_levels[i])
            else:
                # The published pipeline: the prefix level if there is one, else 0 ("unknown").
                levels.append(UNKNOWN_LEVEL if caption_level is None else caption_level)
        return captions, levels

    def check_inputs(self, request: SamplingRequest) -> list[str] | None:
        """Raise a one-line ``ValueError`` for bad arguments; returns the negative prompts as a list."""
        for name, value in (("height", request.height), ("width", request.width)):
            if not isinstance(value, int) or value <= 0 or value % self.vae_scale_factor:
                raise ValueError(f"{name} must be a positive multiple of {self.vae_scale_factor}, got {value!r}")
        steps, per_prompt = request.num_inference_steps, request.num_images_per_prompt
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer, got {steps!r}")
        if not isinstance(per_prompt, int) or per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer, got {per_prompt!r}")
        if request.output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {request.output_type!r}")
        negative, n_prompts = request.negative_prompt, len(request.captions)
        if negative is None:
            return None
        negatives = [negative] * n_prompts if isinstance(negative, str) else list(negative)
        if len(negatives) != n_prompts:
            raise ValueError(f"got {len(negatives)} negative prompts for {n_prompts} prompts")
        return negatives

    # ----------------------------------------------------------------------------------------- progress
    def progress_bar(
        self,
        iterable: Iterable[Any] | None = None,
        total: int | None = None,
        desc: str = "sampling",
        leave: bool = False,
    ) -> tqdm:
        """diffusers' bar with ``desc`` and ``leave`` as defaults: what ``set_progress_bar_config`` set wins."""
        config = getattr(self, "_progress_bar_config", {})
        # diffusers' progress_bar reads only this attribute, so the defaults go in for the one call.
        # disable=None: tqdm shows the bar on a terminal only, so log files get no escape codes.
        self._progress_bar_config = {"desc": desc, "leave": leave, "disable": None, **config}
        try:
            return super().progress_bar(iterable=iterable, total=total)
        finally:
            self._progress_bar_config = config

    @contextlib.contextmanager
    def progress_disabled(self) -> Iterator[None]:
        """No bars from this pipeline inside the block: for callers that show one bar over many calls."""
        config = dict(getattr(self, "_progress_bar_config", {}))
        self.set_progress_bar_config(**{**config, "disable": True})
        try:
            yield
        finally:
            self.set_progress_bar_config(**config)

    # ----------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        level: float | Sequence[float | None] | None = None,
        gsd_m: float | Sequence[float | None] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        level_guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        predict: Predictor | None = None,
    ) -> Text2EarthPipelineOutput | tuple:
        """Generate images for ``prompt`` at the resolution given by ``level`` or ``gsd_m``.

        A prompt in the published ``"{L}_GOOGLE_LEVEL_{caption}"`` form uses ``L`` unless a level is
        given (a different explicit level is an error); no level at all means 0 ("unknown"), as in the
        published pipeline. ``level_guidance_scale=None`` is the published classifier-free guidance;
        a number guides text and level separately (:class:`TextLevelGuidance`). ``predict`` replaces the
        plain UNet call of each step (the ControlNet pipeline passes its own). The denoising bar follows
        ``set_progress_bar_config`` (e.g. ``disable=True``).
        """
        captions, levels = self._split_prompts(prompt, level, gsd_m)
        if is_inpainting_unet(self.unet):
            raise ValueError("this UNet has 9 input channels (inpainting): use Text2EarthInpaintPipeline")
        size = self.unet.config.sample_size * self.vae_scale_factor
        request = SamplingRequest(
            captions=captions,
            levels=levels,
            height=height or size,
            width=width or size,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            level_guidance_scale=level_guidance_scale,
            negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt,
            generator=generator,
            latents=latents,
            output_type=output_type,
        )
        final = self.denoise_latents(request, predict or unet_predictor(self.unet))
        return self.latents_to_output(final, request, return_dict=return_dict)

    def denoise_latents(
        self, request: SamplingRequest, predict: Predictor, callback: StepCallback | None = None
    ) -> torch.Tensor:
        """Check ``request``, encode the branch conditions and run the one loop with ``predict``; final latents.

        Every pipeline variant (inpainting, ControlNet, tiled canvases) calls this with its own ``predict``.
        """
        negatives = self.check_inputs(request)
        device, dtype = self._execution_device, self.unet.dtype
        guider = make_guider(request.guidance_scale, request.level_guidance_scale)

        # Text embeddings in the UNet's dtype; the level class labels stay float32 like the timesteps
        # (build_conditions explains why: bf16 would shift scaled levels).
        conditions = build_conditions(
            guider.branches(request.captions, request.levels, negatives),
            self.text_encoder,
            self.tokenizer,
            level_scale=self.config.level_scale,
            num_images_per_prompt=request.num_images_per_prompt,
            device=device,
            dtype=dtype,
        )
        # Fast sampling keeps the scheduler's tables on the host: no device sync inside the step loop.
        self.scheduler.set_timesteps(request.num_inference_steps, device="cpu" if self.fast is not None else device)
        if self.fast is not None:
            predict = device_timesteps(predict, self.scheduler.timesteps, device)
        shape = (
            len(request.captions) * request.num_images_per_prompt,
            self.vae.config.latent_channels,
            request.height // self.vae_scale_factor,
            request.width // self.vae_scale_factor,
        )
        latents = prepare_latents(
            self.scheduler, shape, generator=request.generator, device=device, dtype=dtype, latents=request.latents
        )
        with self._tracked(new_call=True):
            return denoise(
                self.scheduler,
                latents,
                timesteps=self.scheduler.timesteps,
                guider=guider,
                predict=predict,
                conditions=conditions,
                extra_step_kwargs=step_kwargs(self.scheduler, request.generator),
                progress_bar=self.progress_bar,
                callback=callback,
            )

    def latents_to_output(
        self,
        latents: torch.Tensor,
        request: SamplingRequest,
        return_dict: bool = True,
        finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> Text2EarthPipelineOutput | tuple:
        """Decode (unless ``output_type == "latent"``), apply ``finish`` to the decoded [-1, 1] pixels, convert."""
        if request.output_type == "latent":
            images = latents
        else:
            with self._tracked(new_call=False):
                decoded = decode_latents(self.vae, latents, request.generator)
            if finish is not None:
                decoded = finish(decoded)
            images = self.image_processor.postprocess(decoded, output_type=request.output_type)
        self.maybe_free_model_hooks()

        per_prompt = request.num_images_per_prompt
        image_levels = [lv for lv in request.levels for _ in range(per_prompt)]
        image_prompts = [c for c in request.captions for _ in range(per_prompt)]
        if not return_dict:
            return images, image_levels, image_prompts
        return Text2EarthPipelineOutput(images=images, levels=image_levels, prompts=image_prompts)
