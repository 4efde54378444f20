"""EnhanceDataModule: clean tiles from webdataset shards -> (degraded low-res, clean) training pairs.

Training pairs are degraded afresh every time a tile is drawn (an endless supply of artefact combinations);
validation pairs are fixed by (seed, sample key), so every validation run and the final measurement score the
same inputs whatever the worker layout or order.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from data_modules.webdataset_datamodule import SkipCounter, shard_source
from text2earth.core.config import to_plain
from text2earth.enhance.degradations import DegradationConfig, make_pair, sample_rng
from text2earth.enhance.imagefiles import IMAGE_SUFFIXES, decode
from text2earth.io.images import to_tensor
from text2earth.io.shards import expand_shards

log = logging.getLogger(__name__)
_IMAGE_EXTS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)


def _decode_tile(sample: dict[str, Any]) -> tuple[str, torch.Tensor]:
    """(key, RGB float (3, H, W) in [0, 1]) from the first image member of a webdataset sample."""
    ext = next((e for e in _IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise ValueError(f"sample {sample.get('__key__')} has no image member")
    rgb, _ = decode(sample[ext], IMAGE_SUFFIXES["." + ext])
    return sample["__key__"], to_tensor(rgb)


def _crop(img: torch.Tensor, size: int | None, rng: np.random.Generator | None) -> torch.Tensor:
    """Random crop (rng given) or centre crop to ``size``; smaller images are left whole."""
    h, w = img.shape[-2:]
    if not size or (h <= size and w <= size):
        return img
    size_h, size_w = min(size, h), min(size, w)
    if rng is None:
        top, left = (h - size_h) // 2, (w - size_w) // 2
    else:
        top, left = int(rng.integers(h - size_h + 1)), int(rng.integers(w - size_w + 1))
    return img[:, top : top + size_h, left : left + size_w]


class _TrainPairs:
    """Picklable map for the train pipeline: augment (flips, 90-degree turns), crop, degrade."""

    def __init__(self, scale: int, crop_size: int | None, cfg: DegradationConfig) -> None:
        self.scale, self.crop_size, self.cfg = scale, crop_size, cfg
        self._rng: tuple[int, np.random.Generator] | None = None

    def rng(self) -> np.random.Generator:
        # One generator per process, seeded from torch's per-worker seed: Lightning's seed_everything(workers=True)
        # makes runs reproducible, and every worker (and epoch, for non-persistent workers) draws differently.
        if self._rng is None or self._rng[0] != os.getpid():
            self._rng = (os.getpid(), np.random.default_rng(torch.initial_seed()))
        return self._rng[1]

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key, img = _decode_tile(sample)
        rng = self.rng()
        img = _crop(img, self.crop_size, rng)
        if rng.random() < 0.5:
            img = img.flip(-1)
        img = torch.rot90(img, int(rng.integers(4)), dims=(-2, -1))
        lq, gt = make_pair(img, self.scale, rng, self.cfg)
        return {"lq": lq, "gt": gt, "key": key}


class _ValPairs:
    def __init__(self, scale: int, crop_size: int | None, cfg: DegradationConfig, seed: int) -> None:
        self.scale, self.crop_size, self.cfg, self.seed = scale, crop_size, cfg, seed

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        key, img = _decode_tile(sample)
        lq, gt = make_pair(_crop(img, self.crop_size, None), self.scale, sample_rng(self.seed, key), self.cfg)
        # The source (sensor) lets evaluations break figures down; absent in plain image shards.
        source = json.loads(sample["json"]).get("source", "") if "json" in sample else ""
        return {"lq": lq, "gt": gt, "key": key, "source": str(source)}


def degradation_config(cfg: dict[str, Any] | None) -> DegradationConfig:
    """A DegradationConfig from a (Hydra) dict; lists become the tuples the dataclass expects."""
    plain = to_plain(cfg) or {}
    return DegradationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in plain.items()})


class EnhanceDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_shards: Any,
        val_shards: Any,
        build_embedded_if_missing: str | None = None,
        scale: int = 2,
        crop_size: int | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        val_seed: int = 1234,
        degradation: dict[str, Any] | None = None,
    ) -> None:
        """``train_shards``/``val_shards``: anything ``expand_shards`` takes; ``build_embedded_if_missing``: a
        folder where the embedded real tiles are built first when the shards are missing (as ShardDataModule);
        ``crop_size``: clean-tile crop (random for training, centre for validation; None = whole tiles, which
        must then share one size); ``seed``: shard shuffle; ``val_seed``: the fixed validation degradations;
        ``degradation``: overrides of :class:`DegradationConfig`."""
        super().__init__()
        # Plain containers only: Lightning stores these in checkpoints, which must load with weights_only=True.
        degradation = to_plain(degradation)
        self.save_hyperparameters()
        self.degradation = degradation_config(degradation)
        self.skips = SkipCounter()  # corrupt samples are logged, counted and skipped, never fatal
        self.train_urls: list[str] = []
        self.val_urls: list[str] = []

    def prepare_data(self) -> None:
        if self.hparams.build_embedded_if_missing:
            from data_modules.embedded import ensure_embedded

            ensure_embedded(
                self.hparams.build_embedded_if_missing, (self.hparams.train_shards, self.hparams.val_shards)
            )

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is None:  # used on its own (evaluation, tests): nobody else calls prepare_data
            self.prepare_data()
        if stage in (None, "fit"):
            self.train_urls = expand_shards(self.hparams.train_shards, split="train")
        self.val_urls = expand_shards(self.hparams.val_shards, split="val")

    def _dataset(self, urls: list[str], train: bool) -> wds.DataPipeline:
        hp = self.hparams
        # Split by node and worker, shards shuffled per epoch; a damaged shard counts the samples it lost.
        stages = shard_source(urls, self.skips, min(len(urls), 100) if train else False, hp.seed)
        if train:
            if hp.shuffle_buffer >= 1:
                stages.append(wds.shuffle(hp.shuffle_buffer))
            stages.append(wds.map(_TrainPairs(hp.scale, hp.crop_size, self.degradation), handler=self.skips))
        else:
            stages.append(wds.map(_ValPairs(hp.scale, hp.crop_size, self.degradation, hp.val_seed), handler=self.skips))
        return wds.DataPipeline(*stages)

    def _loader(self, urls: list[str], train: bool) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self._dataset(urls, train),
            batch_size=hp.batch_size if train else (hp.val_batch_size or hp.batch_size),
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            drop_last=train,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_urls, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_urls, train=False)
