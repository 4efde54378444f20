"""ShardDataModule and expand_shards on the real embedded shards (and shards built from them)."""

from __future__ import annotations

import io
import json
import logging
import math
from itertools import islice
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import webdataset as wds
from damaged import damaged_copy, drop_recorded_counts, first_member_offset
from oracles import shard_datamodule

from data_modules.embedded import embedded_missing
from data_modules.webdataset_datamodule import ShardDataModule, sample_level
from text2earth.core.resolution import gsd_to_level
from text2earth.io.shards import expand_shards, read_shard_samples


def _dm(shards: Path, **kw) -> ShardDataModule:
    return shard_datamodule(**{"train_shards": f"{shards}/train-*.tar", "val_shards": f"{shards}/val-*.tar", **kw})


def _first(loader, n: int) -> list[dict]:
    return list(islice(iter(loader), n))


def _write_shard(path: Path, samples: list[dict]) -> Path:
    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


@pytest.fixture(scope="module")
def some_samples(embedded_shards) -> list[dict]:
    return list(islice(read_shard_samples(Path(embedded_shards) / "val-000000.tar"), 12))


# -- expand_shards --------------------------------------------------------------------------------


def test_expand_shards_accepts_every_form(embedded_shards, tmp_path):
    folder = Path(embedded_shards)
    train = sorted(str(p) for p in folder.glob("train-*.tar"))
    assert len(train) >= 3
    assert expand_shards(f"{folder}/train-*.tar") == train
    assert expand_shards(f"{folder}/train-{{000000..{len(train) - 1:06d}}}.tar") == train
    assert expand_shards(folder, split="train") == train
    assert expand_shards(str(folder), split="val") == sorted(str(p) for p in folder.glob("val-*.tar"))
    assert expand_shards([train[1], train[0], train[1]]) == [train[1], train[0]]  # order kept, duplicates dropped
    listing = tmp_path / "shards.txt"
    listing.write_text(f"# the training shards\n{train[0]}\n\n{folder}/train-{{000001..000002}}.tar\n")
    assert expand_shards(listing) == train[:3]
    assert expand_shards("pipe:cat a-{0..2}.tar") == ["pipe:cat a-0.tar", "pipe:cat a-1.tar", "pipe:cat a-2.tar"]


def test_expand_shards_fails_clearly_when_nothing_matches(embedded_shards, tmp_path):
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_shards(f"{tmp_path}/train-*.tar")
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_shards(tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        expand_shards(f"{embedded_shards}/train-{{000000..000099}}.tar")  # some of the range missing
    with pytest.raises(FileNotFoundError):
        expand_shards([])


# -- the batch contract ---------------------------------------------------------------------------


def test_batch_contract(embedded_shards):
    dm = _dm(embedded_shards)
    for batch in _first(dm.train_dataloader(), 2) + _first(dm.val_dataloader(), 1):
        b = len(batch["key"])
        assert b == 32
        pv = batch["pixel_values"]
        assert pv.dtype == torch.float32 and pv.shape == (b, 3, 64, 64)
        assert pv.min() >= -1.0 and pv.max() <= 1.0 and pv.min() < -0.5 and pv.max() > 0.5
        assert batch["level"].dtype == torch.float32 and batch["level"].shape == (b,)
        assert batch["gsd_m"].dtype == torch.float32 and batch["gsd_m"].shape == (b,)
        for level, gsd in zip(batch["level"].tolist(), batch["gsd_m"].tolist(), strict=True):
            assert gsd in (10, 15, 20, 30, 40, 60, 80, 160) and level == pytest.approx(gsd_to_level(gsd), abs=1e-4)
        assert all(isinstance(c, str) and c for c in batch["caption"]) and len(batch["caption"]) == b
        assert all(isinstance(k, str) for k in batch["key"]) and len(set(batch["key"])) == b
        assert "latents" not in batch
    assert len({round(v, 3) for v in batch["level"].tolist()}) >= 3  # shards mix levels


def test_resize_to_image_size(embedded_shards):
    batch = _first(_dm(embedded_shards, image_size=32).val_dataloader(), 1)[0]
    assert batch["pixel_values"].shape[1:] == (3, 32, 32)


def test_val_is_exact_and_deterministic_train_flips(embedded_shards):
    folder = Path(embedded_shards)
    pngs = {}
    for shard in folder.glob("*.tar"):
        for raw in read_shard_samples(shard):
            pngs[raw["__key__"]] = raw["png"]

    def expected(key: str) -> torch.Tensor:
        array = np.asarray(PIL.Image.open(io.BytesIO(pngs[key])).convert("RGB"), dtype=np.float32)
        return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0

    dm = _dm(folder)
    val1 = _first(dm.val_dataloader(), 3)
    val2 = _first(dm.val_dataloader(), 3)
    for a, b in zip(val1, val2, strict=True):
        assert a["key"] == b["key"]
        for key, pv in zip(a["key"], a["pixel_values"], strict=True):
            assert torch.equal(pv, expected(key))  # no flip, no shuffle, exact pixels
    flipped = plain = 0
    for batch in _first(dm.train_dataloader(), 4):
        for key, pv in zip(batch["key"], batch["pixel_values"], strict=True):
            ref = expected(key)
            if torch.equal(pv, ref):
                plain += 1
            else:
                assert torch.equal(pv, ref.flip(-1))
                flipped += 1
    assert 30 <= flipped <= 98 and plain > 30, (flipped, plain)


def test_deterministic_order_for_a_seed(embedded_shards):
    def keys(dm, n=3):
        return [k for b in _first(dm.train_dataloader(), n) for k in b["key"]]

    a, b, c = _dm(embedded_shards, seed=7), _dm(embedded_shards, seed=7), _dm(embedded_shards, seed=8)
    first_a, first_b = keys(a), keys(b)
    assert first_a == first_b
    assert first_a != keys(c)
    second_a, second_b = keys(a), keys(b)
    assert second_a != first_a and second_a == second_b  # each epoch reshuffled, reproducibly
    pa = _first(_dm(embedded_shards, seed=7).train_dataloader(), 1)[0]["pixel_values"]
    pb = _first(_dm(embedded_shards, seed=7).train_dataloader(), 1)[0]["pixel_values"]
    assert torch.equal(pa, pb)  # flips too


def test_deterministic_with_workers_and_a_full_epoch(embedded_shards):
    """Two workers (one val shard each, read as training data): same order twice for a seed, and
    one epoch covers every tile exactly once."""
    manifest = json.loads((Path(embedded_shards) / "manifest.json").read_text())
    runs = []
    for _ in range(2):
        dm = _dm(embedded_shards, train_shards=f"{embedded_shards}/val-*.tar", num_workers=2, batch_size=128, seed=3)
        runs.append([k for batch in dm.train_dataloader() for k in batch["key"]])
    assert runs[0] == runs[1]
    assert len(runs[0]) == len(set(runs[0])) == manifest["counts"]["split"]["val"]


# -- corrupt samples, cached latents, metadata ----------------------------------------------------


def test_corrupt_member_is_skipped_and_counted(tmp_path, some_samples, caplog):
    samples = [dict(s) for s in some_samples[:10]]
    samples[5]["png"] = b"\x89PNG\r\n\x1a\n this is not an image"  # corrupt, in the middle of the shard
    samples[7].pop("txt")  # and one without a caption
    shard = _write_shard(tmp_path / "train-000000.tar", samples)
    good = _write_shard(tmp_path / "train-000001.tar", [dict(s) for s in some_samples[10:12]])
    truncated = tmp_path / "train-000002.tar"  # a shard cut off in the middle of a member
    truncated.write_bytes(shard.read_bytes()[: 3 * 512 + 700])
    dm = ShardDataModule(
        train_shards=[str(shard), str(truncated), str(good)],
        val_shards=[str(shard), str(truncated), str(good)],
        batch_size=4,
        num_workers=0,
    )
    dm.setup("fit")
    with caplog.at_level(logging.WARNING, logger="data_modules.webdataset_datamodule"):
        keys = [k for batch in dm.val_dataloader() for k in batch["key"]]
    expected = [s["__key__"] for i, s in enumerate(samples) if i not in (5, 7)] + [
        s["__key__"] for s in some_samples[10:12]
    ]
    assert keys[:8] == expected[:8] and keys[-2:] == expected[-2:]  # nothing after the bad samples was lost
    # The bad image, the missing caption, the truncated shard's first sample (cut after its .json: no image)
    # and the rest of that shard, which no manifest counts: one.
    assert dm.skipped_samples == 4 and dm.skips.damaged_shards == 1 and dm.skips.unknown_losses == 1
    messages = [r.getMessage() for r in caplog.records]
    assert sum("skipped a corrupt sample" in m for m in messages) == 3
    assert sum("damaged shard" in m and "at least 1 lost" in m for m in messages) == 1


def test_skips_are_counted_across_workers(tmp_path, some_samples):
    samples = [dict(s) for s in some_samples[:8]]
    samples[3]["json"] = b"{not json"
    shards = [_write_shard(tmp_path / f"train-{i:06d}.tar", samples[i * 4 : i * 4 + 4]) for i in range(2)]
    dm = ShardDataModule(train_shards=[str(p) for p in shards], batch_size=2, num_workers=2, shuffle_buffer=0)
    dm.setup("fit")
    keys = [k for batch in dm.train_dataloader() for k in batch["key"]]
    assert len(keys) == 7 and dm.skipped_samples == 1


def _read_val(folder: Path, num_workers: int) -> tuple[list[str], ShardDataModule]:
    spec = f"{folder}/val-*.tar"
    dm = ShardDataModule(train_shards=spec, val_shards=spec, batch_size=8, num_workers=num_workers)
    dm.setup("fit")
    return [k for batch in dm.val_dataloader() for k in batch["key"]], dm


def test_truncated_shard_counts_every_sample_it_lost(embedded_small, tmp_path):
    """A shard cut to half its size, read by two DataLoader workers: every sample the builder wrote is either
    in a batch or counted as skipped (the manifest's shard_samples says how many the shard held)."""
    folder, recorded = damaged_copy(Path(embedded_small), tmp_path / "damaged", lambda b: len(b) // 2)
    keys, dm = _read_val(folder, num_workers=2)
    assert len(keys) == len(set(keys))
    assert dm.skipped_samples == sum(recorded.values()) - len(keys)
    assert dm.skips.damaged_shards == 1 and dm.skips.unknown_losses == 0
    intact = [s["__key__"] for s in read_shard_samples(folder / "val-000001.tar")]
    assert set(intact) <= set(keys)  # the other shard is whole: every skip is the cut shard's
    assert recorded["val-000000.tar"] // 4 < dm.skipped_samples < recorded["val-000000.tar"]  # about half of it


def test_truncated_shard_with_an_old_manifest_counts_one(embedded_small, tmp_path):
    """Cut inside sample 5's first member: samples 0-4 are read whole. With the recorded count, the rest of the
    shard is counted; a manifest without shard_samples (written before it existed) still works: one skip."""
    shard = Path(embedded_small) / "val-000000.tar"
    cut = first_member_offset(shard, 5) + 100
    folder, recorded = damaged_copy(Path(embedded_small), tmp_path / "counted", lambda _b: cut)
    keys, dm = _read_val(folder, num_workers=0)
    whole = sum(recorded.values())
    assert len(keys) == whole - recorded["val-000000.tar"] + 5
    assert dm.skipped_samples == recorded["val-000000.tar"] - 5 == whole - len(keys)

    drop_recorded_counts(folder)
    old_keys, old = _read_val(folder, num_workers=0)
    assert old_keys == keys and old.skipped_samples == 1 and old.skips.unknown_losses == 1


def test_cached_latents_are_passed_through(tmp_path, some_samples):
    samples = []
    for i, s in enumerate(some_samples[:4]):
        s = dict(s)
        latent = np.full((4, 8, 8), float(i), dtype=np.float32)
        if i % 2:
            s["latents.npy"] = wds.writer.numpy_dumps(latent)
        else:
            buffer = io.BytesIO()
            torch.save(torch.from_numpy(latent), buffer)
            s["latents.pth"] = buffer.getvalue()
        samples.append(s)
    shard = _write_shard(tmp_path / "val-000000.tar", samples)
    dm = ShardDataModule(train_shards=str(shard), val_shards=str(shard), batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["latents"].dtype == torch.float32 and batch["latents"].shape == (4, 4, 8, 8)
    assert batch["latents"][:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_sample_level_from_metadata():
    assert sample_level({"gsd_m": 10.0}) == pytest.approx((17 - math.log2(10), 10.0))
    assert sample_level({"resolution": 17}) == (17.0, 1.0)  # Git-10M's field
    level, gsd = sample_level({})
    assert level == 0.0 and math.isnan(gsd)
    level, gsd = sample_level({"level": 0})
    assert level == 0.0 and math.isnan(gsd)
    with pytest.raises(ValueError):
        sample_level({"level": 13, "gsd_m": 100.0})  # disagreeing metadata
    with pytest.raises(ValueError):
        sample_level({"level": 99})


def test_build_if_missing_detection(embedded_shards, tmp_path):
    dm = ShardDataModule(
        train_shards=f"{embedded_shards}/train-*.tar",
        val_shards=f"{embedded_shards}/val-*.tar",
        build_embedded_if_missing=str(embedded_shards),
        num_workers=0,
    )
    before = {p.name: p.stat().st_mtime_ns for p in Path(embedded_shards).iterdir()}
    dm.setup("fit")  # shards and manifest present: nothing is rebuilt
    assert {p.name: p.stat().st_mtime_ns for p in Path(embedded_shards).iterdir()} == before
    assert not embedded_missing(embedded_shards)
    assert embedded_missing(tmp_path)
    (tmp_path / "train-000000.tar").write_bytes(b"")
    (tmp_path / "val-000000.tar").write_bytes(b"")
    assert embedded_missing(tmp_path)  # shards without a manifest: an interrupted build
    manifest = json.loads((Path(embedded_shards) / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert embedded_missing(tmp_path)  # a manifest whose shards are not all there
    with pytest.raises(FileNotFoundError):
        ShardDataModule(f"{tmp_path}/nothing-*.tar", num_workers=0).setup("fit")


def test_hydra_config_instantiates(embedded_shards):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    conf_path = Path(__file__).resolve().parents[1] / "conf" / "data" / "embedded.yaml"
    cfg = OmegaConf.create(
        {
            "paths": {"data_dir": str(Path(embedded_shards).parent / "data")},
            "seed": 0,
            "data": OmegaConf.load(conf_path),
        }
    )
    cfg.data.build_embedded_if_missing = None  # don't build a second copy here
    dm = instantiate(cfg.data)
    assert isinstance(dm, ShardDataModule)
    assert (dm.batch_size, dm.num_workers, dm.image_size) == (64, 2, 64)
    assert dm.train_shards.endswith("/data/embedded/train-*.tar")
    raw = OmegaConf.to_container(OmegaConf.load(conf_path), resolve=False)
    assert raw["build_embedded_if_missing"] == "${paths.data_dir}/embedded"
    assert raw["_target_"] == "data_modules.webdataset_datamodule.ShardDataModule"
