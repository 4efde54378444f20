"""Text-driven editing: the Text2Earth inpainting pipeline (9-channel UNet + caption + level).

Computes what the published inpaint pipeline computes (diffusers' ``StableDiffusionInpaintPipeline``
with a 9-channel UNet, strength 1): noise drawn first, then the masked image (``image * (mask < 0.5)``)
encoded by the VAE with the same generator; per step the UNet sees ``[latents, soft mask at latent
size, masked-image latent]``. It runs the one loop of :mod:`text2earth.pipelines.sampling` through
:meth:`Text2EarthPipeline.denoise_latents` with a ``predict`` that concatenates those channels.

Beyond it: ``paste_back`` puts the unmasked pixels back with a feathered edge, so what the mask
leaves alone stays exactly as it was (the VAE round trip otherwise changes it slightly).

Inputs: one image and one mask of the same size (a multiple of the VAE factor), used for every prompt.
The mask is white (1) where to repaint. It must be single-channel: grayscale, or RGB whose three
channels are equal (a grey PNG saved as RGB). An all-black mask (nothing to repaint) is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from text2earth.io.images import ImageInput, image_to_tensor, mask_to_tensor
from text2earth.models.inpainting import inpaint_model_input, is_inpainting_unet, mask_and_masked_latents
from text2earth.pipelines.sampling import BranchConditions, Predictor, StepCallback, unet_predictor
from text2earth.pipelines.text2img import SamplingRequest, Text2EarthPipeline, Text2EarthPipelineOutput


def check_image_and_mask(pixels: torch.Tensor, mask: torch.Tensor, multiple: int) -> None:
    """One-line errors for a size mismatch, a size the VAE cannot take, or an all-black mask."""
    (h, w), (mh, mw) = pixels.shape[-2:], mask.shape[-2:]
    if (h, w) != (mh, mw):
        raise ValueError(f"mask is {mw}x{mh} pixels but the image is {w}x{h}: they must be the same size")
    if h % multiple or w % multiple:
        raise ValueError(f"image is {w}x{h} pixels: width and height must be multiples of {multiple}")
    if not bool((mask > 0).any()):
        raise ValueError("mask is all black: nothing to repaint (white marks the area to change)")


def feather_weights(mask: torch.Tensor, feather: int) -> torch.Tensor:
    """Weight of the generated pixels when pasting back: 0 wherever ``mask < 0.5`` (kept exactly),
    rising to 1 over ``feather`` pixels inside the repainted area."""
    repaint = (mask >= 0.5).float()
    if feather <= 0:
        return repaint
    keep = 1.0 - repaint
    near_keep = F.avg_pool2d(keep, 2 * feather + 1, stride=1, padding=feather, count_include_pad=False)
    return repaint * (1.0 - 2.0 * near_keep).clamp(0.0, 1.0)


def inpaint_predictor(unet: Any, mask_latent: torch.Tensor, masked_latents: torch.Tensor) -> Predictor:
    """``predict`` for a 9-channel UNet: mask and masked-image latent appended for every guidance branch."""
    base = unet_predictor(unet)

    def predict(latent_model_input: torch.Tensor, t: torch.Tensor, cond: BranchConditions) -> torch.Tensor:
        return base(inpaint_model_input(latent_model_input, mask_latent, masked_latents), t, cond)

    return predict


class Text2EarthInpaintPipeline(Text2EarthPipeline):
    """Text2Earth editing: repaint the white area of a mask from a caption at a chosen resolution."""

    inpainting = True

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        image: ImageInput,
        mask_image: ImageInput,
        level: float | Sequence[float | None] | None = None,
        gsd_m: float | Sequence[float | None] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        level_guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        paste_back: bool = False,
        feather: int = 8,
        callback: StepCallback | None = None,
    ) -> Text2EarthPipelineOutput | tuple:
        """Repaint ``mask_image`` (white = repaint) of ``image`` for each prompt.

        Prompts and resolution work as in :class:`Text2EarthPipeline`. ``paste_back`` restores the
        unmasked pixels exactly, blending into the generated ones over ``feather`` pixels inside the mask.
        The denoising bar follows ``set_progress_bar_config``.
        """
        if not is_inpainting_unet(self.unet):
            raise ValueError(
                f"Text2EarthInpaintPipeline needs a 9-channel UNet, this one has {self.unet.config.in_channels}"
            )
        captions, levels = self._split_prompts(prompt, level, gsd_m)
        n_images = len(captions) * max(int(num_images_per_prompt), 1)
        # One image and mask for every prompt, or a list with one pair per output image (tiled canvases
        # repaint many windows in one call).
        images = image if isinstance(image, list) else [image]
        masks = mask_image if isinstance(mask_image, list) else [mask_image]
        if len(images) != len(masks) or len(images) not in (1, n_images):
            raise ValueError(f"got {len(images)} images and {len(masks)} masks for {n_images} output images")
        pixels = torch.cat([image_to_tensor(i) for i in images])
        mask = torch.cat([mask_to_tensor(m) for m in masks])
        for one_image, one_mask in zip(pixels, mask, strict=True):
            check_image_and_mask(one_image, one_mask, self.vae_scale_factor)
        height, width = pixels.shape[-2:]
        device, dtype = self._execution_device, self.unet.dtype
        shape = (
            n_images,
            self.vae.config.latent_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        # The published order: initial noise from the generator first, then the masked image's latent.
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        pixels, mask = pixels.to(device), mask.to(device)
        # Like diffusers: one masked image is encoded once (with the first generator of a list) and its
        # latent repeated for every image; a list of images is encoded one by one, each with its generator.
        mask_latent, masked_latents = mask_and_masked_latents(self.vae, pixels, mask, generator)
        mask_latent, masked_latents = (x.expand(n_images, -1, -1, -1) for x in (mask_latent, masked_latents))
        request = SamplingRequest(
            captions=captions,
            levels=levels,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            level_guidance_scale=level_guidance_scale,
            negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt,
            generator=generator,
            latents=latents,
            output_type=output_type,
        )
        predict = inpaint_predictor(self.unet, mask_latent.to(dtype), masked_latents.to(dtype))
        final = self.denoise_latents(request, predict, callback=callback)

        def paste(decoded: torch.Tensor) -> torch.Tensor:
            weights = feather_weights(mask, feather).to(decoded.dtype)
            return weights * decoded + (1.0 - weights) * pixels.to(decoded.dtype)

        finish = paste if paste_back else None
        return self.latents_to_output(final, request, return_dict=return_dict, finish=finish)
