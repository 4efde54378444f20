"""Reference procedures the tests compare the library against, written out plainly and shared by the test files.

Nothing here imports ``text2earth.pipelines``: an oracle that reused the code under test could not fail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from diffusers import EulerDiscreteScheduler

from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.models.presets import SCHEDULER


def published_text_embedding(components, text: str) -> torch.Tensor:
    """The published pipeline's caption encoding: CLIP tokens padded to the model length, last hidden state."""
    tokenizer = components.tokenizer
    ids = tokenizer(
        [text], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return components.text_encoder(ids)[0]


@torch.no_grad()
def published_guided_euler(
    components,
    caption: str,
    level: float,
    latents: torch.Tensor,
    steps: int,
    guidance: float = 4.0,
    extra_inputs: Callable[[int], torch.Tensor] | None = None,
) -> np.ndarray:
    """The published sampling loop: Euler, [empty prompt + level 0, caption + level], ``u + g (c - u)``, decode.

    ``extra_inputs(batch)`` gives channels appended to the UNet input each step (the inpainting mask and
    masked-image latent). Returns images (B, H, W, 3) in [0, 1].
    """
    scheduler = EulerDiscreteScheduler.from_config(SCHEDULER)
    scheduler.set_timesteps(steps)
    n = latents.shape[0]
    text = torch.cat(
        [published_text_embedding(components, "")] * n + [published_text_embedding(components, caption)] * n
    )
    labels = torch.tensor([0.0] * n + [level * components.level_scale] * n)  # unconditional branch: level 0
    x = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_in = scheduler.scale_model_input(torch.cat([x, x]), t)
        if extra_inputs is not None:
            model_in = torch.cat([model_in, extra_inputs(2 * n)], 1)
        uncond, cond = components.unet(model_in, t, encoder_hidden_states=text, class_labels=labels).sample.chunk(2)
        x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    vae = components.vae
    decoded = vae.decode(x / vae.config.scaling_factor).sample
    return (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def shard_datamodule(train_shards: str | Path, **kw) -> ShardDataModule:
    """A set-up ShardDataModule over real shards with the tests' defaults (single process, seeded)."""
    args = {"batch_size": 32, "num_workers": 0, "shuffle_buffer": 200, "seed": 0, **kw}
    dm = ShardDataModule(str(train_shards), **args)
    dm.setup("fit")
    return dm
