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

from data_modules.webdataset_datamodule import IMAGE_KEYS, to_pixel_values
from text2earth.io.images import ImageReadError, decode_rgb
from text2earth.io.shards import expand_shards, read_shard_samples


def load_vae(folder: str | Path) -> AutoencoderKL:
    """An AutoencoderKL from a VAE folder or from a model folder's ``vae/``."""
    path = Path(folder)
    if (path / "vae" / "config.json").exists():
        path = path / "vae"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no AutoencoderKL (config.json) in {str(folder)!r} or its vae/ subfolder")
    return AutoencoderKL.from_pretrained(path, local_files_only=True).eval()


def _encode(vae: AutoencoderKL, pixels: torch.Tensor) -> list[bytes]:
    """fp16 ``.npy`` bytes of the scaled posterior means of a batch."""
    latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    out = []
    for latent in latents:
        buffer = io.BytesIO()
        np.save(buffer, latent.numpy().astype(np.float16))
        out.append(buffer.getvalue())
    return out


@torch.no_grad()
def cache_latents(
    shards: str | list[str],
    vae_folder: str | Path,
    out_dir: str | Path,
    image_size: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    flip: bool = False,
) -> dict:
    """Write one output shard per input shard (same name) with ``latents.npy`` added; returns counts.

    ``flip`` also stores ``latents_flip.npy``, the latents of the horizontally flipped image: training
    with random flips then uses it instead of flipping the latent, which is only approximately the
    flipped image's latent.
    """
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
                fields = {"latents.npy": _encode(vae, batch)}
                if flip:
                    fields["latents_flip.npy"] = _encode(vae, batch.flip(-1))
                for i, sample in enumerate(kept[start : start + batch_size]):
                    writer.write({**sample, **{name: values[i] for name, values in fields.items()}})
        os.replace(tmp, target)
        counts["samples"] += len(kept)
        counts["shards"] += 1
    (out / "latent_cache.json").write_text(
        json.dumps(
            {
                **counts,
                "vae": str(vae_folder),
                "scaling_factor": vae.config.scaling_factor,
                "image_size": size,
                "flipped_copy": flip,
            },
            indent=2,
        )
    )
    return counts
