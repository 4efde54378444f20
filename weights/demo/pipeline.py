"""Text2Earth sampling with diffusers alone: the ``pipeline.py`` that ships in every exported model folder.

This file must not import ``text2earth``: it is what lets anyone load an export without this package::

    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(
        folder,
        custom_pipeline=f"{folder}/pipeline.py",
        trust_remote_code=True,  # diffusers asks for it before running a folder's own code
        torch_dtype=torch.float16,
        variant="fp16",  # for an export written with --dtype fp16
    )
    image = pipe("a harbour with ships", level=17).images[0]

It computes what ``text2earth.pipelines.text2img.Text2EarthPipeline`` computes with its default guidance
(a test compares the pixels): prompts in the ``"{L}_GOOGLE_LEVEL_{caption}"`` form or with ``level=``,
the zoom level sent to the UNet as float ``class_labels`` (times the folder's ``level_scale``),
classifier-free guidance with the empty prompt at level 0 as the unconditional branch.
"""

from __future__ import annotations

import inspect
import re

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

_PREFIX = re.compile(r"^\s*(?P<level>[-+]?\d+(?:\.\d+)?)_GOOGLE_LEVEL_")


class Text2EarthDiffusionPipeline(DiffusionPipeline):
    """SD2 latent diffusion with Text2Earth's zoom-level class embedding (``class_embed_type="timestep"``)."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, level_scale: float = 1.0) -> None:
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.register_to_config(level_scale=float(level_scale))
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def _encode(self, captions: list[str], device: torch.device) -> torch.Tensor:
        ids = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(device))[0]  # last hidden state, no attention mask (SD2)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        level: float | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        captions, levels = [], []
        for text in prompts:
            match = _PREFIX.match(text)
            captions.append(text[match.end() :] if match else text)
            levels.append(float(level) if level is not None else float(match.group("level")) if match else 0.0)
        device, dtype, n = self._execution_device, self.unet.dtype, len(prompts)

        embeds = [self._encode(captions, device)]
        labels = [torch.tensor(levels)]
        if guidance_scale > 1.0:  # unconditional first: the empty caption at level 0 ("unknown")
            embeds.insert(0, self._encode([""] * n, device))
            labels.insert(0, torch.zeros(n))
        text_embeds = torch.cat(embeds).to(dtype)
        # float32 like the timesteps: the UNet's sinusoidal projection computes in float32 anyway.
        class_labels = (torch.cat(labels) * self.config.level_scale).to(device=device, dtype=torch.float32)

        size = self.unet.config.sample_size * self.vae_scale_factor
        height, width = height or size, width or size
        shape = (n, self.vae.config.latent_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        step_kwargs = (
            {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        )

        branches = len(embeds)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(torch.cat([latents] * branches), t)
            out = self.unet(
                model_input, t, encoder_hidden_states=text_embeds, class_labels=class_labels, return_dict=False
            )[0]
            if branches == 2:
                uncond, cond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(out, t, latents, **step_kwargs, return_dict=False)[0]

        if output_type == "latent":
            return ImagePipelineOutput(images=latents)
        scaled = latents / self.vae.config.scaling_factor
        image = self.vae.decode(scaled.to(self.vae.dtype), return_dict=False, generator=generator)[0]
        if self.vae.dtype == torch.float16 and not torch.isfinite(image).all():  # SD2's VAE overflows fp16
            image = self.vae.float().decode(scaled.float(), return_dict=False, generator=generator)[0]
            self.vae.half()
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=self.image_processor.postprocess(image, output_type=output_type))
