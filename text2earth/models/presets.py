"""Architecture presets: keyword arguments of the real diffusers / transformers classes.

``text2earth_sd2`` is exactly the published Text2Earth network (Stable Diffusion 2-base with a
zoom-level class embedding, 256 px images); ``tiny`` is the same design at CPU size, used by the
tests, ``make demo`` and the shipped demo model.
"""

from __future__ import annotations

import copy
from typing import Any

# The scheduler Text2Earth (and SD2-base) was trained with; samplers are built from this config.
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "clip_sample": False,
    "set_alpha_to_one": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    "text2earth_sd2": {
        "image_size": 256,
        "level_scale": 1.0,
        "unet": {
            "sample_size": 32,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True,
            "class_embed_type": "timestep",
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": [128, 256, 512, 512],
            "layers_per_block": 2,
            "latent_channels": 4,
            "sample_size": 256,
            "scaling_factor": 0.18215,
        },
        "text_encoder": {
            "vocab_size": 49408,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 23,
            "num_attention_heads": 16,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
            "projection_dim": 512,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
    },
    "tiny": {
        "image_size": 64,
        # The raw level (10..18) barely moves the sinusoidal embedding of a network trained from
        # scratch; scaled by 100 it spans the same range as the timesteps (REFERENCE §8).
        "level_scale": 100.0,
        "unet": {
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
            "block_out_channels": [32, 64, 128],
            "layers_per_block": 2,
            "norm_num_groups": 8,
            "cross_attention_dim": 64,
            "attention_head_dim": [2, 4, 4],
            "use_linear_projection": True,
            "class_embed_type": "timestep",
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ["DownEncoderBlock2D"] * 3,
            "up_block_types": ["UpDecoderBlock2D"] * 3,
            "block_out_channels": [64, 64, 64],
            "layers_per_block": 0,
            "norm_num_groups": 32,
            "latent_channels": 4,
            "sample_size": 64,
            "scaling_factor": 1.0,
        },
        "text_encoder": {
            "vocab_size": 49408,
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "hidden_act": "gelu",
            "projection_dim": 64,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 1,
        },
    },
}


def get_preset(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of preset ``name`` with ``overrides`` merged one level into each part."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    preset = copy.deepcopy(PRESETS[name])
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(preset.get(key), dict):
            preset[key].update(value)
        else:
            preset[key] = value
    return preset
