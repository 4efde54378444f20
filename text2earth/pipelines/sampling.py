"""The one denoising loop every Text2Earth pipeline uses (text-to-image, inpainting, ControlNet).

The order of operations is exactly diffusers' ``StableDiffusionPipeline``: noise scaled by
``scheduler.init_noise_sigma``; per step the latents are repeated once per guidance branch,
``scheduler.scale_model_input``, one denoiser call on the whole stack, split, combine, then
``scheduler.step``. Pipelines differ only in the ``predict`` callable they pass (an inpainting
pipeline concatenates mask channels, a ControlNet pipeline adds residuals), so none of them
needs a copy of the loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from text2earth.models.conditioning import encode_text, level_class_labels
from text2earth.pipelines.guidance import Branch, Guider


@dataclass
class BranchConditions:
    """Conditions of all branches stacked branch-major: rows ``[k*B:(k+1)*B]`` are branch ``k``.

    That is the order in which :func:`denoise` stacks the latents, so row ``i`` of the latent input
    and row ``i`` of these tensors always belong together.
    """

    text_embeds: torch.Tensor  # (n_branches * B, tokens, dim)
    # (n_branches * B,) scaled levels, kept float32 like diffusers keeps the timesteps: the UNet's sinusoidal
    # projection computes in float32 anyway, while bf16 would round e.g. level 13.5 * 100 = 1350 to 1352.
    class_labels: torch.Tensor
    num_branches: int


Predictor = Callable[[torch.Tensor, torch.Tensor, BranchConditions], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None]
# Wraps the timesteps for display: a pipeline passes its ``progress_bar`` (diffusers' tqdm, which honours
# ``set_progress_bar_config``); without one the loop is silent.
ProgressBar = Callable[[Iterable[Any]], Iterable[Any]]


def build_conditions(
    branches: Sequence[Branch],
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    *,
    level_scale: float,
    num_images_per_prompt: int = 1,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> BranchConditions:
    """Encode each branch's captions once and repeat every prompt ``num_images_per_prompt`` times.

    ``dtype`` applies to the text embeddings; class labels stay float32 (see :class:`BranchConditions`).
    Branches with the same captions (e.g. the text and full branches of ``TextLevelGuidance``)
    share one encoder call. Each branch is encoded on its own, as diffusers encodes the negative
    and positive prompts separately, so the embeddings are bit-identical to the published pipeline.
    """
    device = device or text_encoder.device
    cache: dict[tuple[str, ...], torch.Tensor] = {}
    embeds, labels = [], []
    for branch in branches:
        key = tuple(branch.captions)
        if key not in cache:
            cache[key] = encode_text(text_encoder, tokenizer, branch.captions, device=device)
        embeds.append(cache[key].repeat_interleave(num_images_per_prompt, dim=0))
        labels.append(level_class_labels(branch.levels, level_scale).repeat_interleave(num_images_per_prompt))
    text_embeds = torch.cat(embeds)
    if dtype is not None:
        text_embeds = text_embeds.to(dtype)
    class_labels = torch.cat(labels).to(device=device, dtype=torch.float32)
    return BranchConditions(text_embeds=text_embeds, class_labels=class_labels, num_branches=len(branches))


def unet_predictor(unet: UNet2DConditionModel) -> Predictor:
    """``predict`` for a plain text+level UNet: the level goes in as ``class_labels``."""

    def predict(latent_model_input: torch.Tensor, t: torch.Tensor, cond: BranchConditions) -> torch.Tensor:
        return unet(
            latent_model_input,
            t,
            encoder_hidden_states=cond.text_embeds,
            class_labels=cond.class_labels,
            return_dict=False,
        )[0]

    return predict


def prepare_latents(
    scheduler: Any,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Initial latents: ``randn(shape)`` or the given ``latents``, times ``init_noise_sigma``.

    Given latents are used as they are (only moved/cast), and scaled like fresh noise, as diffusers does.
    """
    if isinstance(generator, list) and len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]} images")
    if latents is None:
        latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    else:
        if tuple(latents.shape) != tuple(shape):
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {tuple(shape)}")
        latents = latents.to(device=device, dtype=dtype)
    return latents * scheduler.init_noise_sigma


def step_kwargs(
    scheduler: Any, generator: torch.Generator | list[torch.Generator] | None = None, eta: float = 0.0
) -> dict[str, Any]:
    """Extra ``scheduler.step`` arguments the scheduler accepts (``generator``, DDIM's ``eta``)."""
    params = inspect.signature(scheduler.step).parameters
    extra: dict[str, Any] = {}
    if "eta" in params:
        extra["eta"] = eta
    if "generator" in params:
        extra["generator"] = generator
    return extra


def denoise(
    scheduler: Any,
    latents: torch.Tensor,
    *,
    timesteps: Sequence[torch.Tensor] | torch.Tensor,
    guider: Guider,
    predict: Predictor,
    conditions: BranchConditions,
    extra_step_kwargs: dict[str, Any] | None = None,
    progress_bar: ProgressBar | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the reverse process from ``latents`` (already scaled by ``init_noise_sigma``) over ``timesteps``.

    ``predict(latent_model_input, t, conditions)`` returns the model output for the stacked branches;
    ``callback(i, t, latents)`` may return replacement latents after each step (e.g. to paste known
    regions back for outpainting); ``progress_bar`` wraps the timesteps for display. Returns the final latents.
    """
    n = guider.num_branches
    if conditions.num_branches != n:
        raise ValueError(f"conditions hold {conditions.num_branches} branches, the guider needs {n}")
    extra = extra_step_kwargs or {}
    steps = progress_bar(timesteps) if progress_bar is not None else timesteps
    for i, t in enumerate(steps):
        latent_model_input = torch.cat([latents] * n) if n > 1 else latents
        latent_model_input = scheduler.scale_model_input(latent_model_input, t)
        model_output = predict(latent_model_input, t, conditions)
        model_output = guider.combine(model_output.chunk(n))
        latents = scheduler.step(model_output, t, latents, **extra, return_dict=False)[0]
        if callback is not None:
            replaced = callback(i, t, latents)
            if replaced is not None:
                latents = replaced
    return latents
