"""Image-to-image translation: the Text2Earth pipeline with a ControlNet adding residuals to the frozen UNet.

Everything but the network call is :class:`~text2earth.pipelines.text2img.Text2EarthPipeline` (prompt and
level handling, guidance, the one denoising loop); each call passes a :func:`controlnet_predictor` that
routes each step through :func:`~text2earth.models.controlnet.controlled_prediction`, so the pipeline
object holds no per-call state (as inpainting passes its ``inpaint_predictor``). The condition is an image
in ``[0, 1]`` (B, 3, H, W) at the output size; every guidance branch sees it, as in diffusers' ControlNet
pipelines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from text2earth.core.paths import relative_model_path
from text2earth.io.bands import TASKS, DnRange, read_band, replicate
from text2earth.io.images import load_rgb, to_tensor, to_unit_float
from text2earth.models.components import Components, load_from_folder, reading_weights
from text2earth.models.controlnet import controlled_prediction, read_translator
from text2earth.pipelines.sampling import BranchConditions, Predictor
from text2earth.pipelines.text2img import Text2EarthPipeline, Text2EarthPipelineOutput


def controlnet_predictor(
    unet: UNet2DConditionModel, controlnet: ControlNetModel, condition: torch.Tensor, conditioning_scale: float
) -> Predictor:
    """``predict`` with ControlNet residuals from ``condition`` (B, 3, H, W), which every guidance branch sees."""

    def predict(latent_model_input: torch.Tensor, t: torch.Tensor, cond: BranchConditions) -> torch.Tensor:
        stacked = condition.repeat(latent_model_input.shape[0] // condition.shape[0], 1, 1, 1)  # branch-major
        return controlled_prediction(
            unet,
            controlnet,
            latent_model_input,
            t,
            cond.text_embeds,
            cond.class_labels,
            stacked,
            conditioning_scale,
        )

    return predict


class Text2EarthControlNetPipeline(Text2EarthPipeline):
    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: Any,
        controlnet: ControlNetModel,
        level_scale: float = 1.0,
    ) -> None:
        super().__init__(vae, text_encoder, tokenizer, unet, scheduler, level_scale)
        self.register_modules(controlnet=controlnet)

    @classmethod
    def from_parts(
        cls, components: Components, controlnet: ControlNetModel, scheduler: str | None = None
    ) -> Text2EarthControlNetPipeline:
        base = Text2EarthPipeline.from_components(components, scheduler=scheduler)
        return cls(controlnet=controlnet, level_scale=components.level_scale, **base.components)

    @classmethod
    def from_translator(
        cls, folder: str | Path, model: str | Path | None = None, scheduler: str | None = None
    ) -> tuple[Text2EarthControlNetPipeline, dict[str, Any]]:
        """A pipeline from a translator folder (its base model, or ``model``) and the folder's ``translate.json``."""
        info = read_translator(folder)
        base = model or info.get("base_model")
        if not base:
            raise ValueError(f"{folder}/translate.json names no base model: pass the model folder")
        if model is None:  # a relative base_model is relative to the translator folder
            base = relative_model_path(base, Path(folder))
        with reading_weights(folder):
            controlnet = ControlNetModel.from_pretrained(Path(folder) / "controlnet", local_files_only=True)
        return cls.from_parts(load_from_folder(base), controlnet, scheduler), info

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        prompt: str | list[str] = "",
        conditioning_scale: float = 1.0,
        guidance_scale: float = 1.0,
        **kwargs: Any,
    ) -> Text2EarthPipelineOutput | tuple:
        """Translate condition images ``image`` (B, 3, H, W in [0, 1]); one prompt, or one per image."""
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"the condition must be a (B, 3, H, W) tensor, got {getattr(image, 'shape', image)!r}")
        n = image.shape[0]
        prompts = [prompt] * n if isinstance(prompt, str) else list(prompt)
        if len(prompts) != n:
            raise ValueError(f"got {len(prompts)} prompts for {n} condition images")
        if kwargs.get("num_images_per_prompt", 1) != 1:
            raise ValueError("translation makes one image per condition")
        condition = image.to(device=self._execution_device, dtype=self.controlnet.dtype)
        predict = controlnet_predictor(self.unet, self.controlnet, condition, float(conditioning_scale))
        return super().__call__(
            prompts,
            guidance_scale=guidance_scale,
            height=image.shape[2],
            width=image.shape[3],
            predict=predict,
            **kwargs,
        )


def sr_factor(task: str) -> int:
    """The upscaling factor of a super-resolution task (1 for every other task)."""
    return int(task.removeprefix("sr_x")) if task.startswith("sr_x") else 1


def load_condition(path: str | Path, task: str, dn_range: DnRange = "auto") -> torch.Tensor:
    """The condition image of ``task`` from a file, as (1, 3, H, W) in [0, 1].

    Single-band conditions (PAN, NIR, SAR) must be single-band files (8 or 16 bit; 16-bit scaled by
    ``dn_range``, see :mod:`text2earth.io.bands`), replicated to three channels. RGB conditions must be RGB;
    a super-resolution input is the low-resolution image, upsampled bicubically by the task's factor.
    """
    cond_modality = TASKS[task][0]
    if cond_modality == "rgb":
        rgb = load_rgb(path)  # clear errors for a missing or undecodable file
        with PIL.Image.open(path) as original:
            bands = len(original.getbands())
        if bands not in (3, 4):
            raise ValueError(f"task {task} needs an RGB image, {path} has {bands} band(s)")
        array = to_unit_float(rgb)
    else:
        array = replicate(read_band(path, dn_range))
    tensor = to_tensor(array)[None]
    factor = sr_factor(task)
    if factor > 1:
        tensor = F.interpolate(tensor, scale_factor=factor, mode="bicubic", align_corners=False).clamp(0, 1)
    return tensor
