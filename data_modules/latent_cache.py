"""Latent + text cache: encode every sample of a set of shards once, into new shards of the same names.

Each output sample keeps all the input fields (image, caption, metadata, extras) and adds:

- ``latents.npy`` and ``latents_std.npy``: the VAE posterior's mean and standard deviation, both times the
  VAE's ``scaling_factor`` (float16, C x h x w). Training draws ``mean + std * noise`` with its own
  generator, exactly the sample the uncached path takes (``latent_dist.sample()``), so a cache changes
  the cost of a step, not what is trained on. (Caches of older versions hold ``latents.npy`` only: they
  are read as the posterior mean, as before.)
- ``encoder_hidden_states.npy`` (with a model folder that has ``text_encoder/`` and ``tokenizer/``): the
  text encoder's last hidden state of the caption (float16, 77 x D), so training skips the text encoder
  too. Caption dropout still works: the module swaps in the empty prompt's states.
- with ``flip``: ``latents_flip.npy`` / ``latents_flip_std.npy``, the posterior of the flipped image.

Scale: ``devices`` runs one process per device, each encoding its own share of the shards (shard ``i``
goes to process ``i % N``) and writing those output shards itself. Every output shard is written to a
temporary name and renamed when complete, so re-running the same command resumes: finished shards are
kept, the rest are (re)done.

Image size: by default each image is encoded at its own size (the centre square of its shorter side,
never resampled): 256-px Git-10M tiles give 32 x 32 latents, as training at 256 px needs. The VAE
config's ``sample_size`` (512 / 768 for SD2) says nothing about the data and is not used.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from diffusers import AutoencoderKL
from tqdm import tqdm

from data_modules.webdataset_datamodule import IMAGE_KEYS, to_pixel_values
from text2earth.core.errors import UserError
from text2earth.io.files import atomic_path, write_atomic
from text2earth.io.images import ImageReadError, decode_rgb
from text2earth.io.shards import (
    SHARD_READ_ERRORS,
    SHARD_SAMPLES_KEY,
    ShardDamaged,
    count_shard_samples,
    expand_shards,
    iter_samples,
)
from text2earth.models.components import reading_weights
from text2earth.models.conditioning import encode_text

MANIFEST = "latent_cache.json"
_SUMMED = ("samples", "skipped", "damaged_shards", "lost_samples", "unknown_losses")  # per-shard counts, added up
log = logging.getLogger(__name__)


def load_vae(folder: str | Path) -> AutoencoderKL:
    """An AutoencoderKL from a VAE folder or from a model folder's ``vae/``."""
    path = Path(folder)
    if (path / "vae" / "config.json").exists():
        path = path / "vae"
    if not path.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no autoencoder in {str(folder)!r} (config.json there or in its vae/ subfolder)")
    with reading_weights(folder):
        return AutoencoderKL.from_pretrained(path, local_files_only=True).eval()


def load_text_encoder(folder: str | Path) -> tuple[Any, Any] | None:
    """``(text_encoder, tokenizer)`` of a model folder, or ``None`` when it has neither (a bare VAE folder)."""
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(folder)
    if not has_text_encoder(path):
        return None
    encoder = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True).eval()
    return encoder, CLIPTokenizer.from_pretrained(path / "tokenizer")


def resolve_devices(device: str = "cpu", devices: int | str | Sequence[str] | None = None) -> list[str]:
    """The devices to run one process each on: ``devices`` as a count of ``device`` (``cuda`` -> cuda:0..N-1,
    ``cpu`` -> N CPU processes), a comma-separated string or a list; ``None``: just ``device``."""
    if devices is None or devices == "":
        return [device]
    if isinstance(devices, str) and not devices.isdigit():
        devices = [d.strip() for d in devices.split(",") if d.strip()]
    if isinstance(devices, (int, str)):
        count = int(devices)
        if count < 1:
            raise UserError(f"--devices must be >= 1, got {count}")
        if device.startswith("cuda") and ":" not in device:
            return [f"cuda:{i}" for i in range(count)]
        return [device] * count
    return list(devices)


def _npy(array: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array.cpu().numpy().astype(np.float16))
    return buffer.getvalue()


def _posterior(vae: AutoencoderKL, pixels: torch.Tensor, name: str) -> dict[str, list[bytes]]:
    """``{name}.npy`` / ``{name}_std.npy`` bytes: the scaled posterior mean and std of each image."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    scale = vae.config.scaling_factor
    return {
        f"{name}.npy": [_npy(m) for m in dist.mean.float() * scale],
        f"{name}_std.npy": [_npy(s) for s in dist.std.float() * scale],
    }


def _cache_shard(
    url: str, target: Path, vae: AutoencoderKL, text: tuple[Any, Any] | None, cfg: dict[str, Any]
) -> dict[str, Any]:
    """Encode one shard into ``target`` (written to ``.tmp``, then renamed); its counts and latent sizes."""
    kept, pixels, skipped = [], [], 0
    damage: ShardDamaged | None = None
    for sample in _readable_samples(url):
        if isinstance(sample, ShardDamaged):  # the shard ends in damage: what came before is kept
            damage = sample
            break
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        try:
            image = decode_rgb(sample[key], f"{url}:{sample['__key__']}") if key else None
        except ImageReadError:
            image = None
        if image is None:
            skipped += 1
            continue
        kept.append(sample)
        # The data's own size (the shorter side's centre square) unless a size is asked for.
        pixels.append(to_pixel_values(image, cfg["image_size"] or min(image.size)))
    fields: list[dict[str, bytes]] = [{} for _ in kept]
    # Samples of one size are encoded together; the output keeps the input order.
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(pixels):
        by_size.setdefault(tuple(p.shape), []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), cfg["batch_size"]):
            chunk = indices[start : start + cfg["batch_size"]]
            batch = torch.stack([pixels[i] for i in chunk])
            encoded = _posterior(vae, batch, "latents")
            if cfg["flip"]:
                encoded.update(_posterior(vae, batch.flip(-1), "latents_flip"))
            if text is not None:
                captions = [_caption(kept[i]) for i in chunk]
                states = encode_text(text[0], text[1], captions, vae.device).float()
                encoded["encoder_hidden_states.npy"] = [_npy(s) for s in states]
            for j, i in enumerate(chunk):
                fields[i].update({name: values[j] for name, values in encoded.items()})
    with atomic_path(target) as tmp, wds.TarWriter(str(tmp)) as writer:  # a failed write leaves no .tmp
        for sample, extra in zip(kept, fields, strict=True):
            writer.write({**sample, **extra})
    sizes = sorted({s[-1] for s in by_size})
    return {
        "samples": len(kept),
        "skipped": skipped,
        "damaged_shards": int(damage is not None),
        "lost_samples": 0 if damage is None else damage.counted,
        "unknown_losses": int(damage is not None and damage.lost is None),
        "pixel_sizes": sizes,
    }


def _readable_samples(url: str) -> Iterator[dict[str, Any] | ShardDamaged]:
    """The samples of a shard up to the first damage, then a ``ShardDamaged`` that says how many were lost
    (logged, and counted as in the DataModule)."""
    damage: list[ShardDamaged] = []

    def keep(exc: ShardDamaged) -> bool:  # the rest of the shard is skipped, the damage reported below
        damage.append(exc)
        return True

    yield from iter_samples([url], handler=keep)
    if damage:
        log.warning("%s: keeping the samples before the damage", damage[0].describe())
        yield damage[0]


def _caption(sample: dict[str, Any]) -> str:
    """The caption the DataModule would read: ``.txt``, else the metadata's ``caption``."""
    if "txt" in sample:
        return sample["txt"].decode("utf-8").strip()
    meta = json.loads(sample["json"]) if "json" in sample else {}
    return str(meta.get("caption", "")).strip()


@torch.no_grad()
def _worker(index: int, device: str, jobs: list[tuple[str, str]], cfg: dict[str, Any]) -> dict[str, Any]:
    """One process's share: load the encoders on ``device`` and write each (input url, output path) job."""
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    vae = load_vae(cfg["vae_folder"]).to(device)
    text = load_text_encoder(cfg["vae_folder"]) if cfg["text"] else None
    if text is not None:
        text = (text[0].to(device), text[1])
    done: dict[str, Any] = {"written": {}, "shard_samples": {}, "pixel_sizes": set()}
    done.update(dict.fromkeys(_SUMMED, 0))
    for url, target in tqdm(
        jobs, desc=f"cache latents [{device}]", unit="shard", disable=None if cfg["progress"] else True
    ):
        counts = _cache_shard(url, Path(target), vae, text, cfg)
        for key in _SUMMED:
            done[key] += counts[key]
        done["pixel_sizes"].update(counts["pixel_sizes"])
        done["written"][Path(target).name] = index
        done["shard_samples"][Path(target).name] = counts["samples"]
    done["pixel_sizes"] = sorted(done["pixel_sizes"])
    return done


def _run_worker(args: tuple[int, str, list[tuple[str, str]], dict[str, Any]]) -> dict[str, Any]:
    return _worker(*args)


def cache_latents(
    shards: str | list[str],
    vae_folder: str | Path,
    out_dir: str | Path,
    image_size: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    flip: bool = False,
    device: str = "cpu",
    devices: int | str | Sequence[str] | None = None,
    text: bool = True,
) -> dict[str, Any]:
    """Write one output shard per input shard (same name) into ``out_dir``; returns counts.

    ``vae_folder``: a model folder (its ``vae/``, and ``text_encoder/`` + ``tokenizer/`` for the text
    states unless ``text`` is false) or a bare VAE folder. ``image_size``: ``None`` encodes every image at
    its own size. ``device`` / ``devices``: see :func:`resolve_devices`; one process per device. Output
    shards that already exist are kept (a re-run resumes). Counts: ``samples`` / ``skipped`` /
    ``shards`` done by this call, ``kept`` shards already present, ``written_by`` (shard -> process).
    """
    urls = expand_shards(shards)
    if not urls:
        raise UserError(f"no shards match {shards!r}")
    load_vae(vae_folder)  # a wrong folder fails here, in one line, not in every worker
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for torn in out.glob("*.tmp"):  # a run killed mid-write: never read, removed before resuming
        torn.unlink(missing_ok=True)
    targets = [out / Path(url).name for url in urls]
    if len(set(targets)) != len(targets):
        raise UserError("input shards with the same file name would overwrite each other in the cache")
    todo = [(url, str(t)) for url, t in zip(urls, targets, strict=True) if not t.exists()]
    plan = resolve_devices(device, devices)
    cfg = {
        "vae_folder": str(vae_folder),
        "image_size": image_size,
        "batch_size": batch_size,
        "flip": flip,
        "text": text,
        "progress": progress,
        # CPU processes share the cores instead of each taking all of them.
        "threads": max(1, (os.cpu_count() or 1) // len(plan)) if len(plan) > 1 else 0,
    }
    shares = [(i, dev, todo[i :: len(plan)], cfg) for i, dev in enumerate(plan)]
    shares = [s for s in shares if s[2]]
    if len(shares) > 1:
        # spawn: CUDA cannot be re-initialised in a forked child, and a clean child per device is simplest.
        with multiprocessing.get_context("spawn").Pool(len(shares)) as pool:
            results = pool.map(_run_worker, shares)
    else:
        results = [_worker(*s) for s in shares]
    shard_samples = {name: n for r in results for name, n in r["shard_samples"].items()}
    counts: dict[str, Any] = {
        "samples": sum(r["samples"] for r in results),
        "damaged_shards": sum(r["damaged_shards"] for r in results),
        # Samples after the damage in damaged input shards; a lower bound (one per shard) unless lost_exact.
        "lost_samples": sum(r["lost_samples"] for r in results),
        "lost_exact": not any(r["unknown_losses"] for r in results),
        "skipped": sum(r["skipped"] for r in results),
        "shards": len(todo),
        "kept": len(urls) - len(todo),
        "written_by": {name: i for r in results for name, i in r["written"].items()},
    }
    manifest = {
        **counts,
        "vae": str(vae_folder),
        "image_size": image_size or "native",
        "pixel_sizes": sorted({s for r in results for s in r["pixel_sizes"]}),
        "devices": plan,
        "posterior": "latents.npy = scaled mean, latents_std.npy = scaled std",
        "text_states": bool(text and has_text_encoder(vae_folder)),
        "flipped_copy": flip,
        # Every output shard's sample count, so that a reader of the cache counts what a damaged copy lost
        # (text2earth.io.shards); shards kept from an earlier run are counted from their headers.
        SHARD_SAMPLES_KEY: {t.name: n for t in targets if (n := shard_samples.get(t.name, _counted(t))) is not None},
    }
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=2).encode())
    return counts


def _counted(shard: Path) -> int | None:
    """A kept output shard's sample count from its headers; ``None`` (left out) when it cannot be read."""
    try:
        return count_shard_samples(shard)
    except SHARD_READ_ERRORS:
        return None


def has_text_encoder(folder: str | Path) -> bool:
    """Whether ``folder`` has the text encoder and tokenizer the cache's text states come from."""
    path = Path(folder)
    return (path / "text_encoder" / "config.json").exists() and (path / "tokenizer").is_dir()
