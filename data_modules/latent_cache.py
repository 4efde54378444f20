"""Latent cache: encode every image of a set of shards with the VAE once, into new shards.

Each output sample keeps all the input fields (image, caption, metadata, extras) and adds
``latents.npy``: the VAE posterior mean times the VAE's ``scaling_factor`` (float16, C x h x w), exactly
what ``LatentDiffusionModule`` would have computed, so training skips the VAE (batch key ``latents``).
The posterior mean is stored rather than a sample: for a trained VAE the posterior standard deviation
is tiny next to the latents, and a mean is reproducible.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from diffusers import AutoencoderKL
from tqdm import tqdm

from data_modules.embedded import read_shard_samples
from data_modules.shards import expand_shards
from data_modules.webdataset_datamodule import IMAGE_KEYS, to_pixel_values
from text2earth.imageio import ImageReadError, decode_rgb


def load_vae(folder: str | Path) -> AutoencoderKL:
    """An AutoencoderKL from a VAE folder or from a model folder's ``vae/``."""
    path = Path(folder)
    if (path / "vae" / "config.json").exists():
        path = path / "vae"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no AutoencoderKL (config.json) in {str(folder)!r} or its vae/ subfolder")
    return AutoencoderKL.from_pretrained(path, local_files_only=True).eval()


@torch.no_grad()
def cache_latents(
    shards: str | list[str],
    vae_folder: str | Path,
    out_dir: str | Path,
    image_size: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> dict:
    """Write one output shard per input shard (same name) with ``latents.npy`` added; returns counts."""
    vae = load_vae(vae_folder)
    size = image_size or int(vae.config.sample_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"samples": 0, "skipped": 0, "shards": 0}
    for url in tqdm(expand_shards(shards), desc="cache latents", unit="shard", disable=not progress):
        samples = list(read_shard_samples(url))
        kept, pixels = [], []
        for sample in samples:
            key = next((k for k in IMAGE_KEYS if k in sample), None)
            try:
                image = decode_rgb(sample[key], f"{url}:{sample['__key__']}") if key else None
            except ImageReadError:
                image = None
            if image is None:
                counts["skipped"] += 1
                continue
            kept.append(sample)
            pixels.append(to_pixel_values(image, size))
        target = out / Path(url).name
        tmp = target.with_name(target.name + ".tmp")
        with wds.TarWriter(str(tmp)) as writer:
            for start in range(0, len(kept), batch_size):
                batch = torch.stack(pixels[start : start + batch_size])
                latents = vae.encode(batch).latent_dist.mean * vae.config.scaling_factor
                for sample, latent in zip(kept[start : start + batch_size], latents, strict=True):
                    buffer = io.BytesIO()
                    np.save(buffer, latent.numpy().astype(np.float16))
                    writer.write({**sample, "latents.npy": buffer.getvalue()})
        os.replace(tmp, target)
        counts["samples"] += len(kept)
        counts["shards"] += 1
    (out / "latent_cache.json").write_text(
        json.dumps(
            {**counts, "vae": str(vae_folder), "scaling_factor": vae.config.scaling_factor, "image_size": size},
            indent=2,
        )
    )
    return counts
