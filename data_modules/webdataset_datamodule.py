"""``ShardDataModule``: streams webdataset shards into the training batch contract.

Batch (a dict):
    pixel_values  float32 B x 3 x H x W in [-1, 1] (channels-last memory)
    caption       list[str]
    level         float32 B (zoom level, 0 = unknown)
    gsd_m         float32 B (metres per pixel, nan when unknown)
    key           list[str]
    mask          float32 B x 1 x H x W (1 = repaint), only with ``masks`` set (inpainting), drawn in the workers
    latents       float32 B x 4 x h x w, only when every sample carries cached latents (the posterior mean)
    latents_std   float32 B x 4 x h x w, the cached posterior std, when the cache has it
    encoder_hidden_states  float32 B x 77 x D, the cached text-encoder states, when the cache has them
    conditioning  float32 B x 3 x H x W in [0, 1], the ControlNet condition of paired-sample shards
                  (``{key}.cond.png``, see data_modules/pairs.py), only when every sample has one

Shards are split by node and by DataLoader worker, shuffled deterministically for a seed (the
order changes every epoch, reproducibly), decoded with safe decoders only (no pickle; ``.pth``
with ``weights_only=True``) and a corrupt sample is skipped with a logged warning and counted,
never fatal. The training stream's position (epoch, and samples consumed per rank and worker) is
kept by the module and saved in checkpoints (``state_dict``), so a resumed run continues the
interrupted epoch: no sample is repeated or skipped (see ``StreamPosition``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.distributed as dist
import webdataset as wds
from lightning import LightningDataModule
from torch.utils.data import DataLoader, get_worker_info
from webdataset.autodecode import Decoder
from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener
from webdataset.utils import PipelineStage, pytorch_worker_info

from text2earth.core.resolution import UNKNOWN_LEVEL, check_level, gsd_to_level, level_to_gsd
from text2earth.core.seeding import seeded_generator, stream_seed
from text2earth.io.images import decode_rgb, normalise_uint8, to_tensor
from text2earth.io.shards import ShardDamaged, expand_shards
from text2earth.models.conditioning import tokenize
from text2earth.models.masks import MaskGenerator

log = logging.getLogger(__name__)

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
LATENT_KEYS = ("latents.npy", "latents.pth")
CONDITION_KEY = "cond.png"
# Arrays a latent cache adds beside ``latents.npy`` (data_modules/latent_cache.py) -> sample field names.
CACHED_ARRAYS = {
    "latents_std.npy": "latents_std",
    "latents_flip.npy": "latents_flip",
    "latents_flip_std.npy": "latents_flip_std",
    "encoder_hidden_states.npy": "encoder_hidden_states",
}
STREAM_KEY = "stream_pos"  # batch entry: (worker, epoch, raw samples read, samples yielded), popped after transfer


class SkipCounter:
    """A webdataset exception handler: log a warning, count the skip, carry on.

    A ``ShardDamaged`` (a shard cut short) counts the samples it lost (see ``text2earth.io.shards``), or one
    when its writer recorded no count; every other error is one skipped sample. The counts live in shared
    memory so that skips inside DataLoader worker processes are seen by the main process (``count``).
    """

    def __init__(self) -> None:
        self._value = multiprocessing.Value("i", 0)
        self._shards = multiprocessing.Value("i", 0)  # damaged shards
        self._unknown = multiprocessing.Value("i", 0)  # damaged shards whose loss is not known (counted 1)

    def __call__(self, exn: BaseException) -> bool:
        damaged = isinstance(exn, ShardDamaged)
        with self._value.get_lock():
            self._value.value += exn.counted if damaged else 1
            n = self._value.value
        if damaged:
            with self._shards.get_lock():
                self._shards.value += 1
            if exn.lost is None:
                with self._unknown.get_lock():
                    self._unknown.value += 1
            log.warning("skipped the rest of a damaged shard (%d samples skipped so far): %s", n, exn.describe())
        else:
            log.warning("skipped a corrupt sample (%d so far): %s", n, _describe(exn))
        return True

    @property
    def count(self) -> int:
        """Samples skipped: corrupt ones, and those lost in damaged shards (at least one per shard)."""
        return int(self._value.value)

    @property
    def damaged_shards(self) -> int:
        return int(self._shards.value)

    @property
    def unknown_losses(self) -> int:
        """Damaged shards without a recorded sample count: each is counted as one lost sample, a lower bound."""
        return int(self._unknown.value)


class CountedShardSamples(PipelineStage):
    """Shard dicts (``{"url": ...}``) -> raw samples, as webdataset's ``tarfile_to_samples``, but a shard cut
    short is reported to ``skips`` once, as a ``ShardDamaged`` that knows how many samples it lost.

    webdataset's own stage calls the handler once or twice per damaged shard and cannot know what was
    lost; here each shard is read on its own, so the samples delivered before the damage are counted. The
    last one delivered may be the sample the damage cut into: like any sample it is decoded downstream, and
    one that lacks its image or caption is a counted corrupt sample there, so skipped + used = expected.
    """

    def __init__(self, skips: Any) -> None:
        self.skips = skips

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        errors: list[BaseException] = []

        def hold(exn: BaseException) -> bool:  # opening or reading the tar failed: the shard is damaged
            errors.append(exn)
            return True

        for shard in src:
            errors.clear()
            delivered = 0
            files = tar_file_expander(url_opener([dict(shard)], handler=hold), handler=hold)
            for sample in group_by_keys(files, handler=self.skips):  # a duplicate member: one bad sample
                delivered += 1
                yield sample
            if errors:
                self.skips(ShardDamaged(shard["url"], delivered, errors[0]))


def shard_source(urls: list[str], skips: Any, shardshuffle: int | bool, seed: int) -> list[Any]:
    """The stages of ``wds.WebDataset(urls, handler=skips, shardshuffle=..., detshuffle=True, seed=seed,
    nodesplitter=split_by_node, workersplitter=split_by_worker)`` (the same shards in the same order), with
    the shards read by ``CountedShardSamples`` so that a damaged shard counts the samples it lost."""
    return [
        wds.SimpleShardList(urls),
        wds.split_by_node,
        wds.split_by_worker,
        wds.detshuffle(shardshuffle, seed=seed),
        CountedShardSamples(skips),
    ]


def _describe(exn: BaseException) -> str:
    text = f"{type(exn).__name__}: {exn}"
    if getattr(exn, "k", None) is not None:  # webdataset's DecodingError: which sample and field
        text = f"{type(exn).__name__}: sample {getattr(exn, 'key', '?')!r}, field {exn.k!r}, shard {getattr(exn, 'url', '?')}"
    cause = exn.__cause__ or exn.__context__
    if cause is not None:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text[:500]


def _worker_tag() -> str:
    rank, _world, worker, _num_workers = pytorch_worker_info()
    return f"{rank}:{worker}"


class _EpochShuffle(PipelineStage):
    """Buffer shuffle seeded by (seed, epoch, rank, worker): reproducible, different every epoch."""

    def __init__(self, bufsize: int, seed: int) -> None:
        self.bufsize, self.seed = bufsize, seed
        self.epoch = -1

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        self.epoch += 1
        rng = random.Random(f"shuffle:{self.seed}:{self.epoch}:{_worker_tag()}")
        buf: list[dict] = []
        for sample in src:
            buf.append(sample)
            if len(buf) < self.bufsize:
                continue
            yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


class _EpochAugment(PipelineStage):
    """Random ``size`` crop at native resolution (when ``crop``) and horizontal flip (p = 0.5, when ``flip``)
    of the uint8 ``pixels`` (a cached ``latents`` is flipped too), seeded per (seed, epoch, rank, worker).

    The crop never resamples: resizing would change the ground sample distance the level describes.
    """

    def __init__(self, seed: int, size: int, crop: bool, flip: bool) -> None:
        self.seed, self.size, self.crop, self.flip = seed, size, crop, flip
        self.epoch = -1

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        self.epoch += 1
        rng = random.Random(f"augment:{self.seed}:{self.epoch}:{_worker_tag()}")
        for sample in src:
            if self.crop:  # a view; copied once when the batch is stacked
                h, w = sample["pixels"].shape[:2]
                top, left = rng.randint(0, h - self.size), rng.randint(0, w - self.size)
                sample["pixels"] = sample["pixels"][top : top + self.size, left : left + self.size]
                if "conditioning" in sample:  # a pair is cropped by the same window
                    if tuple(sample["conditioning"].shape[-2:]) != (h, w):
                        raise ValueError(f"sample {sample['key']!r}: condition and image sizes differ")
                    sample["conditioning"] = sample["conditioning"][..., top : top + self.size, left : left + self.size]
            if self.flip and rng.random() < 0.5:
                sample["flip"] = True  # done on the stacked batch in torch (numpy's reversed copy is slow)
                if "latents_flip" in sample:  # cached from the flipped image: exact
                    sample["latents"] = sample["latents_flip"]
                    if "latents_flip_std" in sample:
                        sample["latents_std"] = sample["latents_flip_std"]
                elif "latents" in sample:  # the VAE is convolutional: a flipped latent ~ the flipped image's
                    sample["latents"] = sample["latents"].flip(-1)
                    if "latents_std" in sample:
                        sample["latents_std"] = sample["latents_std"].flip(-1)
                if "conditioning" in sample:  # a pair flips together
                    sample["conditioning"] = sample["conditioning"].flip(-1)
            yield sample


class _WorkerMasks(PipelineStage):
    """One random inpainting mask per sample (``mask``, 1 x H x W), drawn in the DataLoader worker from a
    generator seeded per (seed, rank, worker, epoch); validation (``per_epoch=False``) draws the same masks
    every pass, so val/loss curves compare across steps."""

    def __init__(self, masks: MaskGenerator, seed: int, per_epoch: bool) -> None:
        self.masks, self.seed, self.per_epoch = masks, seed, per_epoch
        self.epoch = -1

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        self.epoch += 1
        epoch = self.epoch if self.per_epoch else "val"
        generator = seeded_generator(stream_seed(self.seed, "masks", epoch, _worker_tag()))
        for sample in src:
            h, w = sample["pixels"].shape[:2]
            sample["mask"] = self.masks(1, h, w, generator)[0]
            yield sample


@dataclass
class StreamPosition:
    """Where one rank is in its training stream: the epoch, and per DataLoader worker how many samples it
    has read from its shuffled shard stream (``raw``) and how many of them reached a batch (``out``).

    Counted in the training process from the batches the trainer consumed, so samples still in flight
    (prefetched by workers) are not counted and are produced again after a resume. ``raw`` lets a resumed
    worker skip consumed samples before decoding them; ``out`` keeps the resampled mode's epoch length.
    """

    epoch: int = 0
    raw: dict[int, int] = field(default_factory=dict)
    out: dict[int, int] = field(default_factory=dict)

    def advance(self, worker: int, epoch: int, raw: int, out: int) -> None:
        if epoch > self.epoch:  # a new epoch: the old counts are done with
            self.epoch, self.raw, self.out = epoch, {}, {}
        self.raw[worker], self.out[worker] = raw, out

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "raw": dict(self.raw), "out": dict(self.out)}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StreamPosition:
        return cls(
            int(state["epoch"]),
            {int(k): int(v) for k, v in state["raw"].items()},
            {int(k): int(v) for k, v in state["out"].items()},
        )


class _SkipConsumed(PipelineStage):
    """Numbers this worker's raw (shuffled, not yet decoded) samples per epoch; in the resumed epoch it
    skips the ones the checkpoint says were consumed, before any decoding."""

    def __init__(self, start: StreamPosition) -> None:
        self.start = start
        self.epoch = start.epoch - 1

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        self.epoch += 1
        _rank, _world, worker, _n = pytorch_worker_info()
        skip = self.start.raw.get(worker, 0) if self.epoch == self.start.epoch else 0
        for index, sample in enumerate(src):
            if index >= skip:
                sample["__stream__"] = (self.epoch, index + 1)
                yield sample


class _CountYielded(PipelineStage):
    """Tags each finished sample with its stream position; ``length`` (resampled mode) ends the worker's
    epoch after that many samples, counting those yielded before a resume."""

    def __init__(self, start: StreamPosition, length: int | None) -> None:
        self.start, self.length = start, length
        self.epoch = start.epoch - 1

    def run(self, src: Iterator[dict]) -> Iterator[dict]:
        self.epoch += 1
        _rank, _world, worker, _n = pytorch_worker_info()
        done = self.start.out.get(worker, 0) if self.epoch == self.start.epoch else 0
        if self.length is not None and done >= self.length:
            return
        for sample in src:
            done += 1
            sample["__stream__"] = (*sample["__stream__"], done)
            yield sample
            if self.length is not None and done >= self.length:
                return


def _set_epoch(stage: Any, epoch: int) -> None:
    """Start every epoch counter of a pipeline (ours, webdataset's shard shuffles and resampling) at ``epoch``."""
    for inner in getattr(stage, "pipeline", ()):
        _set_epoch(inner, epoch)
    if isinstance(getattr(stage, "epoch", None), int):
        stage.epoch = epoch - 1  # each counter is incremented when its stage starts an epoch


def _decode_field(key: str, data: bytes) -> Any:
    """Decoders for the fields the batch needs; everything else stays raw bytes (never unpickled)."""
    ext = key.lstrip(".").lower()
    if ext in IMAGE_KEYS or ext == CONDITION_KEY:
        return decode_rgb(data, key)  # full decode: corrupt data fails here, and the sample is skipped
    if ext == "txt":
        return data.decode("utf-8")
    if ext == "json":
        return json.loads(data)
    if ext in CACHED_ARRAYS or ext == "latents.npy":
        return np.load(io.BytesIO(data), allow_pickle=False)
    if ext == "latents.pth":
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return None


_DECODER = Decoder([_decode_field], pre=[], post=[])


def fit_image(image: PIL.Image.Image, size: int, keep_larger: bool = False) -> np.ndarray:
    """RGB PIL image -> uint8 ``size x size x 3`` array (centre square crop, bicubic resize if needed).

    ``keep_larger``: an image with both sides >= ``size`` is returned whole, for a later random crop.
    """
    w, h = image.size
    if not (keep_larger and min(w, h) >= size):
        if w != h:
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if image.size != (size, size):
            image = image.resize((size, size), PIL.Image.Resampling.BICUBIC)
    return np.asarray(image)


def to_pixel_values(image: PIL.Image.Image, size: int) -> torch.Tensor:
    """RGB PIL image -> float32 3 x size x size in [-1, 1] (centre square crop, bicubic resize if needed)."""
    return to_tensor(fit_image(image, size), (-1.0, 1.0))


def sample_level(meta: dict[str, Any]) -> tuple[float, float]:
    """``(level, gsd_m)`` from sample metadata (``level`` or Git-10M's ``resolution``, and/or ``gsd_m``).

    Neither present -> ``(0, nan)`` (unknown). Both present but disagreeing -> ``ValueError``: the
    sample's metadata is wrong and it is skipped rather than trained on with a wrong condition.
    """
    level = meta.get("level", meta.get("resolution"))
    gsd = meta.get("gsd_m")
    if gsd is not None and isinstance(gsd, float) and math.isnan(gsd):
        gsd = None
    if level is None and gsd is None:
        return UNKNOWN_LEVEL, math.nan
    if level is None:
        return gsd_to_level(gsd), float(gsd)
    value = check_level(level)
    if gsd is None:
        from_level = level_to_gsd(value)
        return value, math.nan if from_level is None else float(from_level)
    if value != UNKNOWN_LEVEL and abs(gsd_to_level(gsd) - value) > 1e-3:
        raise ValueError(f"metadata level {value} and gsd_m {gsd} disagree (gsd gives level {gsd_to_level(gsd):.4f})")
    return value, float(gsd)


class _ToSample:
    """Decoded webdataset sample -> one item of the batch contract (raises on anything malformed)."""

    def __init__(self, image_size: int, keep_larger: bool = False, tokenizer: Any = None) -> None:
        self.image_size, self.keep_larger, self.tokenizer = image_size, keep_larger, tokenizer

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key = sample.get("__key__", "?")
        image_key = next((k for k in IMAGE_KEYS if k in sample), None)
        if image_key is None:
            raise ValueError(f"sample {key!r} has no image ({'/'.join(IMAGE_KEYS)})")
        meta = sample.get("json") or {}
        caption = sample.get("txt", meta.get("caption"))
        if not isinstance(caption, str):
            raise ValueError(f"sample {key!r} has no caption (.txt)")
        level, gsd_m = sample_level(meta)
        out: dict[str, Any] = {
            "pixels": fit_image(sample[image_key], self.image_size, self.keep_larger),  # uint8 H x W x 3
            "caption": caption.strip(),
            "level": level,
            "gsd_m": gsd_m,
            "key": key,
        }
        if "__stream__" in sample:
            out["__stream__"] = sample["__stream__"]
        if self.tokenizer is not None:  # in the DataLoader worker, off the training process
            out["input_ids"] = tokenize(self.tokenizer, [out["caption"]])[0]
        if CONDITION_KEY in sample:
            out["conditioning"] = (to_pixel_values(sample[CONDITION_KEY], self.image_size) + 1.0) / 2.0
        latent_key = next((k for k in LATENT_KEYS if k in sample), None)
        if latent_key is not None:
            latents = torch.as_tensor(
                np.asarray(sample[latent_key]) if latent_key.endswith("npy") else sample[latent_key]
            )
            if latents.ndim != 3:
                raise ValueError(f"sample {key!r}: cached latents must be C x h x w, got shape {tuple(latents.shape)}")
            out["latents"] = latents.float()
        # The posterior's std (training samples mean + std * noise), the flipped image's posterior and the
        # caption's text-encoder states, where the cache holds them.
        for member, name in CACHED_ARRAYS.items():
            if member in sample:
                out[name] = torch.as_tensor(np.asarray(sample[member])).float()
        return out


class SampleFilter:
    """Keep a decoded sample only when its metadata passes every filter that is set.

    ``min_quality`` (``quality`` or Git-10M's ``img_quality_score``; a sample without one is dropped),
    ``levels`` (allowed zoom levels, to 1e-3; 0 = unknown), ``caption_words`` (``(min, max)`` words, either
    may be ``None``) and ``modalities`` (``modality``, ``"rgb"`` when absent).
    """

    def __init__(
        self,
        min_quality: float | None = None,
        levels: list[float] | None = None,
        caption_words: tuple[int | None, int | None] | None = None,
        modalities: list[str] | None = None,
    ) -> None:
        self.min_quality = min_quality
        self.levels = None if levels is None else [check_level(v) for v in levels]
        self.caption_words = tuple(caption_words) if caption_words is not None else None
        self.modalities = None if modalities is None else set(modalities)
        self.on_error: Any = None  # the DataModule's SkipCounter

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.min_quality, self.levels, self.caption_words, self.modalities))

    def __call__(self, sample: dict[str, Any]) -> bool:
        try:
            return self._keep(sample)
        except (ValueError, TypeError, AttributeError) as exc:  # malformed metadata: a counted skip
            if self.on_error is None:
                raise
            self.on_error(exc)
            return False

    def _keep(self, sample: dict[str, Any]) -> bool:
        meta = sample.get("json") or {}
        if self.min_quality is not None:
            quality = meta.get("quality", meta.get("img_quality_score"))
            if quality is None or float(quality) < self.min_quality:
                return False
        if self.levels is not None:
            level, _gsd = sample_level(meta)
            if not any(abs(level - allowed) < 1e-3 for allowed in self.levels):
                return False
        if self.caption_words is not None:
            caption = sample.get("txt", meta.get("caption"))
            words = len(caption.split()) if isinstance(caption, str) else 0
            low, high = self.caption_words
            if (low is not None and words < low) or (high is not None and words > high):
                return False
        return self.modalities is None or meta.get("modality", "rgb") in self.modalities


def collate_samples(samples: list[dict[str, Any]], uint8: bool = False) -> dict[str, Any]:
    """Stack items into the batch contract; ``latents`` only when every item has them (same shape).

    The uint8 images become float ``pixel_values`` here, once per batch; with ``uint8`` they stay uint8
    ``pixels`` (B x 3 x H x W) for ``ShardDataModule.on_after_batch_transfer`` to normalise on the device.
    """
    stacked = torch.from_numpy(np.stack([s["pixels"] for s in samples]))  # B x H x W x 3 uint8
    flipped = [i for i, s in enumerate(samples) if s.get("flip")]
    if flipped:
        stacked[flipped] = stacked[flipped].flip(2)
    batch: dict[str, Any] = {
        "pixels" if uint8 else "pixel_values": stacked.movedim(-1, 1)
        if uint8
        else normalise_uint8(stacked.movedim(-1, 1)),
        "caption": [s["caption"] for s in samples],
        "level": torch.tensor([s["level"] for s in samples], dtype=torch.float32),
        "gsd_m": torch.tensor([s["gsd_m"] for s in samples], dtype=torch.float32),
        "key": [s["key"] for s in samples],
    }
    if all("mask" in s for s in samples):
        batch["mask"] = torch.stack([s["mask"] for s in samples])
    if "__stream__" in samples[-1]:  # a worker's samples arrive in stream order: the last is the furthest
        info = get_worker_info()
        batch[STREAM_KEY] = (0 if info is None else info.id, *samples[-1]["__stream__"])
    if all("input_ids" in s for s in samples):
        batch["input_ids"] = torch.stack([s["input_ids"] for s in samples])
    conditions = [s.get("conditioning") for s in samples]
    if all(c is not None for c in conditions):
        batch["conditioning"] = torch.stack(conditions)
    elif any(c is not None for c in conditions):
        raise ValueError("batch mixes paired samples (with .cond.png) and unpaired ones")
    latents = [s.get("latents") for s in samples]
    if all(t is not None for t in latents):
        if len({tuple(t.shape) for t in latents}) != 1:
            raise ValueError(
                f"cached latents of different shapes in one batch: {sorted({tuple(t.shape) for t in latents})}"
            )
        batch["latents"] = torch.stack(latents)
        # Posterior std and text states ride along only when every sample has them, like the latents.
        for name in ("latents_std", "encoder_hidden_states"):
            if all(name in s for s in samples):
                batch[name] = torch.stack([s[name] for s in samples])
    elif any(t is not None for t in latents):
        log.warning("batch mixes samples with and without cached latents: latents dropped for this batch")
    return batch


class ShardDataModule(LightningDataModule):
    """Webdataset shards -> batches of ``pixel_values``, ``caption``, ``level``, ``gsd_m``, ``key`` (+ ``latents``).

    ``train_shards`` / ``val_shards`` take anything ``expand_shards`` accepts. With
    ``build_embedded_if_missing`` set to a folder, missing shards are first built there from the
    embedded real scenes (``data_modules.embedded``), so a fresh checkout trains out of the box.
    ``samples_per_epoch`` (per rank) switches training to resampled shards with a fixed epoch
    length: every rank then sees the same number of batches, which multi-GPU training needs when
    shards do not divide evenly between ranks and workers; without it, an epoch reads every shard
    once, split by node and worker, so every sample is seen exactly once per epoch across all ranks.
    Filters (``min_quality``, ``levels``, ``caption_words``, ``modalities``: see ``SampleFilter``) apply
    to training and validation. ``random_crop`` takes random ``image_size`` windows of larger images at
    native resolution (training only). ``tokenizer`` (a tokenizer folder, a model folder with
    ``tokenizer/``, or ``"bundled"`` for the CLIP tokenizer shipped in ``text2earth/assets``) adds
    ``input_ids`` computed in the DataLoader workers; the module then skips tokenising.
    ``uint8_batches`` ships images as uint8 ``pixels`` (4x fewer bytes through shared memory, pinning and
    the host-to-device copy) and turns them into float ``pixel_values`` after the transfer, on the device
    (``on_after_batch_transfer``, which Lightning calls); loaders used outside Lightning then see ``pixels``.
    ``masks`` (``MaskGenerator`` settings, for inpainting) adds a random ``mask`` per sample, drawn in the
    DataLoader workers from streams seeded per (seed, rank, worker, epoch).

    Resuming mid-epoch: training batches carry their stream position (``stream_pos``), which
    ``on_after_batch_transfer`` records and removes. ``state_dict`` (saved by Lightning in every
    checkpoint) gathers every rank's position; ``load_state_dict`` makes the next training loader
    start at the saved epoch, each worker skipping the samples it had already delivered (raw bytes,
    before decoding). Exact for the same number of ranks and workers; otherwise the interrupted
    epoch restarts from its beginning, with a warning.
    """

    def __init__(
        self,
        train_shards: Any,
        val_shards: Any = None,
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        image_size: int = 64,
        random_flip: bool = True,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        build_embedded_if_missing: str | None = None,
        min_quality: float | None = None,
        samples_per_epoch: int | None = None,
        pin_memory: bool | None = None,
        levels: list[float] | None = None,
        caption_words: tuple[int | None, int | None] | None = None,
        modalities: list[str] | None = None,
        random_crop: bool = False,
        tokenizer: str | None = None,
        uint8_batches: bool = False,
        masks: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.train_shards = train_shards
        self.val_shards = val_shards
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.random_flip = random_flip
        self.shuffle_buffer = shuffle_buffer
        self.seed = int(seed)
        self.build_embedded_if_missing = build_embedded_if_missing
        self.filter = SampleFilter(min_quality, levels, caption_words, modalities)
        self.random_crop = random_crop
        self.tokenizer = tokenizer
        self.uint8_batches = uint8_batches
        self.masks = None if masks is None else MaskGenerator(**masks)
        self.samples_per_epoch = samples_per_epoch
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.skips = SkipCounter()
        self.filter.on_error = self.skips
        self._tokenizer: Any = None
        self.train_urls: list[str] | None = None
        self.val_urls: list[str] | None = None
        self._train_loader: DataLoader | None = None
        self._val_loader: DataLoader | None = None
        self._start = StreamPosition()  # where the next training loader begins (a checkpoint's position)
        self.position = StreamPosition()  # this rank's position in the training stream, as consumed

    # -- shards ---------------------------------------------------------------------------------
    @property
    def skipped_samples(self) -> int:
        """Corrupt samples skipped so far (all workers together)."""
        return self.skips.count

    def prepare_data(self) -> None:
        """Build the embedded shards when asked to and they are missing (Lightning: local rank 0 only)."""
        if self.build_embedded_if_missing:
            from data_modules.embedded import ensure_embedded

            ensure_embedded(self.build_embedded_if_missing, (self.train_shards, self.val_shards))

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is None:  # used on its own (scripts, tests): nobody else calls prepare_data
            self.prepare_data()
        if self.train_urls is None:
            self.train_urls = expand_shards(self.train_shards, split="train")
        if self.val_urls is None and self.val_shards is not None:
            self.val_urls = expand_shards(self.val_shards, split="val")
        _rank, world, _worker, _n = pytorch_worker_info()
        consumers = world * max(1, self.num_workers)
        if self.samples_per_epoch is None and len(self.train_urls) < consumers:
            log.warning(
                "%d training shards for %d readers (%d ranks x %d workers): some read nothing; "
                "write more, smaller shards or set samples_per_epoch",
                len(self.train_urls),
                consumers,
                world,
                max(1, self.num_workers),
            )

    # -- pipelines ------------------------------------------------------------------------------
    def make_dataset(self, urls: list[str], train: bool) -> wds.DataPipeline:
        """The webdataset pipeline for ``urls`` (train: shuffled shards and samples, random flips)."""
        if train and self.samples_per_epoch:
            stages: list[Any] = [
                wds.ResampledShards(urls, seed=self.seed, deterministic=True),
                CountedShardSamples(self.skips),
            ]
        else:
            stages = shard_source(urls, self.skips, min(len(urls), 100) if train else False, self.seed)
        if train and self.shuffle_buffer > 1:  # shuffle raw bytes: cheaper to hold than decoded tensors
            stages.append(_EpochShuffle(self.shuffle_buffer, self.seed))
        if train:
            stages.append(_SkipConsumed(self._start))
        stages.append(wds.map(_DECODER, handler=self.skips))
        if self.filter.active:
            stages.append(wds.select(self.filter))
        crop = train and self.random_crop
        stages.append(wds.map(_ToSample(self.image_size, crop, self._load_tokenizer()), handler=self.skips))
        if crop or (train and self.random_flip):
            stages.append(_EpochAugment(self.seed, self.image_size, crop, train and self.random_flip))
        if self.masks is not None:  # after the crop: a mask covers the image the model sees
            stages.append(_WorkerMasks(self.masks, self.seed, per_epoch=train))
        if train:  # resampled: a fixed number of samples per worker and epoch
            length = math.ceil(self.samples_per_epoch / max(1, self.num_workers)) if self.samples_per_epoch else None
            stages.append(_CountYielded(self._start, length))
        dataset = wds.DataPipeline(*stages)
        if train:
            _set_epoch(dataset, self._start.epoch)
        return dataset

    def _load_tokenizer(self) -> Any:
        if self.tokenizer is None or self._tokenizer is not None:
            return self._tokenizer
        from transformers import CLIPTokenizer

        from text2earth.models.tokenizer import load_clip_tokenizer

        if self.tokenizer == "bundled":
            self._tokenizer = load_clip_tokenizer()
        else:
            path = Path(self.tokenizer)
            path = path / "tokenizer" if (path / "tokenizer").is_dir() else path
            if not path.is_dir():
                raise FileNotFoundError(f"tokenizer folder not found: {self.tokenizer}")
            self._tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        return self._tokenizer

    def _loader(self, urls: list[str], train: bool) -> DataLoader:
        return DataLoader(
            self.make_dataset(urls, train),
            batch_size=self.batch_size if train else self.val_batch_size,
            collate_fn=partial(collate_samples, uint8=self.uint8_batches),
            num_workers=self.num_workers,
            # Persistent workers keep their pipeline (and its epoch counter) between epochs, so the
            # shuffle differs per epoch; fresh workers would replay epoch 0 every time.
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and "pixels" in batch:
            batch["pixel_values"] = normalise_uint8(batch.pop("pixels"))
        if isinstance(batch, dict) and STREAM_KEY in batch:  # the trainer takes this batch: it is consumed
            self.position.advance(*(int(v) for v in batch.pop(STREAM_KEY)))
        return batch

    # -- stream position in checkpoints ---------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every rank's stream position (a collective under torch.distributed: Lightning builds the
        checkpoint on every rank and rank 0 writes it)."""
        local = self.position.as_dict()
        ranks = [local]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, local)
        return {"num_workers": self.num_workers, "samples_per_epoch": self.samples_per_epoch, "ranks": ranks}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Start the next training loader where the checkpoint's stream stopped (before ``train_dataloader``)."""
        ranks = state_dict.get("ranks") or []
        if not ranks:  # a checkpoint from before stream positions were saved
            return
        rank, world = (
            (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        )
        same = (
            len(ranks) == world
            and state_dict.get("num_workers") == self.num_workers
            and state_dict.get("samples_per_epoch") == self.samples_per_epoch
        )
        if same:
            self._start = StreamPosition.from_dict(ranks[rank])
        else:
            epoch = min(int(r["epoch"]) for r in ranks)
            log.warning(
                "the checkpoint's data stream was read by %d ranks x %s workers (samples_per_epoch %s), this run has "
                "%d x %d (%s): epoch %d restarts from its beginning",
                len(ranks),
                state_dict.get("num_workers"),
                state_dict.get("samples_per_epoch"),
                world,
                self.num_workers,
                self.samples_per_epoch,
                epoch,
            )
            self._start = StreamPosition(epoch)
        self.position = StreamPosition.from_dict(self._start.as_dict())
        self._train_loader = None  # built anew from the restored position

    def train_dataloader(self) -> DataLoader:
        if self.train_urls is None:
            self.setup("fit")
        if self._train_loader is None:
            self._train_loader = self._loader(self.train_urls, train=True)
        return self._train_loader

    def val_dataloader(self) -> DataLoader | list:
        if self.train_urls is None:
            self.setup("validate")
        if not self.val_urls:
            return []
        if self._val_loader is None:
            self._val_loader = self._loader(self.val_urls, train=False)
        return self._val_loader
