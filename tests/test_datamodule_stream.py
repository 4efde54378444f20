"""Streaming features of ShardDataModule: filters, pipe: URLs, resampled epochs, native crops, tokenising
in workers, and the exactly-once epoch across two real DDP processes (torch.distributed, gloo, CPU)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
import webdataset as wds
from oracles import shard_datamodule
from probes import read_seen

from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.core.resolution import gsd_to_level
from text2earth.io.shards import read_shard_samples
from text2earth.models.conditioning import tokenize
from text2earth.models.tokenizer import load_clip_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def val_samples(embedded_shards) -> list[dict]:
    return [s for shard in sorted(Path(embedded_shards).glob("val-*.tar")) for s in read_shard_samples(shard)]


@pytest.fixture(scope="module")
def eight_shards(val_samples, tmp_path_factory) -> tuple[Path, list[str]]:
    """The real val tiles re-cut into 8 shards of uneven size (so ranks and workers get unequal shares)."""
    folder = tmp_path_factory.mktemp("eight")
    bounds = np.linspace(0, len(val_samples), 9).astype(int)
    bounds[3] += 17  # uneven
    for i in range(8):
        with wds.TarWriter(str(folder / f"train-{i:06d}.tar")) as sink:
            for s in val_samples[bounds[i] : bounds[i + 1]]:
                sink.write(s)
    return folder, [s["__key__"] for s in val_samples]


def _keys(dm: ShardDataModule, train: bool = True) -> list[str]:
    loader = dm.train_dataloader() if train else dm.val_dataloader()
    return [k for batch in loader for k in batch["key"]]


def _dm(shards, **kw) -> ShardDataModule:
    return shard_datamodule(shards, **{"shuffle_buffer": 50, **kw})


def test_filters(eight_shards, val_samples, tmp_path):
    folder, keys = eight_shards
    metas = {s["__key__"]: json.loads(s["json"]) for s in val_samples}
    captions = {s["__key__"]: s["txt"].decode() for s in val_samples}
    level10, level30 = gsd_to_level(10.0), gsd_to_level(30.0)
    got = _keys(_dm(f"{folder}/train-*.tar", levels=[level10, level30]))
    expected = {k for k, m in metas.items() if m["gsd_m"] in (10, 30)}
    assert set(got) == expected and len(got) == len(expected) and 0 < len(expected) < len(keys)

    words = sorted(len(c.split()) for c in captions.values())
    low = words[len(words) // 2]
    got = _keys(_dm(f"{folder}/train-*.tar", caption_words=[low, None]))
    assert set(got) == {k for k, c in captions.items() if len(c.split()) >= low} and len(got) < len(keys)

    assert _keys(_dm(f"{folder}/train-*.tar", modalities=["rgb"])) != []
    assert _keys(_dm(f"{folder}/train-*.tar", modalities=["sar"])) == []

    # quality: written into a copy of some samples; a sample with malformed metadata is a counted skip
    samples = [dict(s) for s in val_samples[:6]]
    for i, s in enumerate(samples):
        s["json"] = json.dumps({**metas[s["__key__"]], "quality": 4.5 + i * 0.1}).encode()
    samples[5]["json"] = json.dumps({**metas[samples[5]["__key__"]], "quality": 5.0, "level": "high"}).encode()
    with wds.TarWriter(str(tmp_path / "q.tar")) as sink:
        for s in samples:
            sink.write(s)
    dm = _dm(
        str(tmp_path / "q.tar"), min_quality=4.8, levels=[gsd_to_level(m) for m in (10, 15, 20, 30, 40, 60, 80, 160)]
    )
    assert sorted(_keys(dm)) == sorted(s["__key__"] for s in samples[3:5]) and dm.skipped_samples == 1


def test_pipe_urls_and_list_file(eight_shards, tmp_path, monkeypatch):
    from text2earth.core.errors import UserError

    folder, keys = eight_shards
    local = sorted(str(p) for p in folder.glob("train-*.tar"))
    listing = tmp_path / "shards.txt"
    listing.write_text("\n".join(f"pipe:cat {p}" for p in local))
    with pytest.raises(UserError, match="TEXT2EARTH_ALLOW_PIPE"):  # a command read from a file: refused by default
        _dm(listing, val_shards=listing)
    monkeypatch.setenv("TEXT2EARTH_ALLOW_PIPE", "1")
    dm = _dm(listing, val_shards=listing)
    assert dm.train_urls[0].startswith("pipe:cat ")
    assert _keys(dm, train=False) == keys  # gopen runs `cat`; same samples in shard order
    assert sorted(_keys(dm)) == sorted(keys)


def test_resampled_epochs_have_a_fixed_length(eight_shards):
    folder, keys = eight_shards
    dm = _dm(f"{folder}/train-*.tar", samples_per_epoch=100, num_workers=2, batch_size=10)
    epochs = [_keys(dm) for _ in range(3)]
    assert [len(e) for e in epochs] == [100, 100, 100]  # with_epoch: 50 per worker
    assert epochs[0] != epochs[1] and set(epochs[0]) <= set(keys)
    again = _dm(f"{folder}/train-*.tar", samples_per_epoch=100, num_workers=2, batch_size=10)
    assert _keys(again) == epochs[0]  # deterministic for a seed


def test_random_crop_at_native_resolution(eight_shards, val_samples):
    folder, _ = eight_shards
    pngs = {s["__key__"]: s["png"] for s in val_samples}
    dm = _dm(f"{folder}/train-*.tar", image_size=40, random_crop=True, random_flip=False)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (32, 3, 40, 40)
    offsets = set()
    for key, pv in zip(batch["key"][:8], batch["pixel_values"][:8], strict=True):
        full = torch.from_numpy(np.asarray(PIL.Image.open(io.BytesIO(pngs[key])).convert("RGB"), dtype=np.float32))
        full = full.permute(2, 0, 1) / 127.5 - 1.0
        found = [
            (t, left) for t in range(25) for left in range(25) if torch.equal(full[:, t : t + 40, left : left + 40], pv)
        ]
        assert found, key  # an exact window: cropped, never resampled
        offsets.add(found[0])
    assert len(offsets) > 1
    val = next(iter(dm.val_dataloader())) if dm.val_urls else None
    assert val is None  # no val shards given


def test_tokenised_in_workers_match_the_module(eight_shards):
    from text2earth.training.module import LatentDiffusionModule

    folder, _ = eight_shards
    dm = _dm(f"{folder}/train-*.tar", num_workers=1, tokenizer="bundled", batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    tokenizer = load_clip_tokenizer()
    assert batch["input_ids"].shape == (4, tokenizer.model_max_length)
    assert torch.equal(batch["input_ids"], tokenize(tokenizer, batch["caption"]))
    module = LatentDiffusionModule(components={"preset": "tiny"}, optimizer=None, lr_scheduler=None)
    ids_batch = {
        "caption": batch["caption"],
        "level": batch["level"],
        "input_ids": tokenize(module.tokenizer, batch["caption"]),
    }
    with_ids, _ = module.conditions(ids_batch, drop=False)
    plain, _ = module.conditions({"caption": batch["caption"], "level": batch["level"]}, drop=False)
    torch.testing.assert_close(with_ids, plain)
    torch.manual_seed(0)
    dropped, _ = module.conditions({**ids_batch, "caption": [""] * 4}, drop=False)  # empty captions = null ids
    torch.testing.assert_close(dropped, module.null_text_embedding().expand_as(dropped))
    with pytest.raises(FileNotFoundError, match="tokenizer folder"):
        _dm(f"{folder}/train-*.tar", tokenizer="/nonexistent").train_dataloader()


RANK_SCRIPT = """
import json, os, sys
import torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
from data_modules.webdataset_datamodule import ShardDataModule
dm = ShardDataModule(sys.argv[1], batch_size=16, num_workers=2, shuffle_buffer=64, seed=5)
dm.setup("fit")
epochs = [[k for batch in dm.train_dataloader() for k in batch["key"]] for _ in range(2)]
json.dump(epochs, open(os.path.join(sys.argv[2], f"rank{dist.get_rank()}.json"), "w"))
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ddp_two_ranks_see_every_sample_exactly_once_per_epoch(eight_shards, tmp_path):
    folder, keys = eight_shards
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run(
        [*cmd, f"{folder}/train-*.tar", str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for epoch in range(2):
        seen = ranks[0][epoch] + ranks[1][epoch]
        assert len(seen) == len(set(seen)) == len(keys) and set(seen) == set(keys)
        assert ranks[0][epoch] and ranks[1][epoch]
    assert ranks[0][0] != ranks[0][1]  # reshuffled between epochs


def test_uint8_batches_become_the_same_floats_after_transfer(eight_shards):
    folder, _ = eight_shards
    plain = next(iter(_dm(f"{folder}/train-*.tar").train_dataloader()))
    dm = _dm(f"{folder}/train-*.tar", uint8_batches=True)
    raw = next(iter(dm.train_dataloader()))
    assert "pixel_values" not in raw and raw["pixels"].dtype == torch.uint8 and raw["pixels"].shape == (32, 3, 64, 64)
    moved = dm.on_after_batch_transfer(raw, 0)  # what Lightning calls after moving the batch to the device
    assert raw["key"] == plain["key"]
    assert torch.equal(moved["pixel_values"], plain["pixel_values"]) and "pixels" not in moved


# -- mid-epoch resumption: the stream position saved in checkpoints ------------------------------------------


@pytest.fixture(scope="module")
def four_shards(val_samples, tmp_path_factory) -> tuple[Path, list[str]]:
    """48 real tiles in 4 shards of 12: with 2 workers and batches of 4, an epoch is 12 steps."""
    folder = tmp_path_factory.mktemp("four")
    for i in range(4):
        with wds.TarWriter(str(folder / f"train-{i:06d}.tar")) as sink:
            for s in val_samples[i * 12 : (i + 1) * 12]:
                sink.write(s)
    return folder, [s["__key__"] for s in val_samples[:48]]


def _train_keys(shards: Path, run_dir: Path, max_steps: int, extra=()) -> list[list[str]]:
    """Train the tiny demo model to ``max_steps`` (resuming with ``ckpt_path=last_or_none``: a fresh start when
    ``run_dir`` has no checkpoint yet); the keys of each batch this call trained on."""
    from text2earth.core.config import compose_config
    from text2earth.training.run import train

    seen = run_dir / f"seen_{max_steps}"
    overrides = [
        "experiment=demo",
        "model.components.vae_folder=null",
        f"data.train_shards={shards}/train-*.tar",
        "data.val_shards=null",
        "data.build_embedded_if_missing=null",
        "data.batch_size=4",
        "data.num_workers=2",
        "data.shuffle_buffer=8",
        "logger=csv",
        "trainer=cpu",
        f"trainer.max_steps={max_steps}",
        "callbacks.samples=null",
        "callbacks.eval_metrics=null",
        "callbacks.export=null",
        "callbacks.model_checkpoint.every_n_train_steps=1",  # last.ckpt at each step: the stop is a checkpoint
        "callbacks.model_checkpoint.save_top_k=0",
        f"+callbacks.seen={{_target_: probes.SeenKeys, folder: '{seen}'}}",
        "ckpt_path=last_or_none",
        *extra,
    ]
    result = train(compose_config("train", overrides, output_dir=run_dir))
    assert result["global_step"] == max_steps
    return [keys for _step, keys in read_seen(seen)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "stops"),
    [
        ((), (5, 12, 16)),  # epoch mode (12 steps an epoch): mid-epoch, at the epoch's end, mid next epoch
        (("+data.samples_per_epoch=20",), (3, 8)),  # resampled: 10 samples per worker, 6 steps an epoch
    ],
    ids=["epoch", "resampled"],
)
def test_resumed_runs_see_the_keys_of_an_uninterrupted_run(four_shards, tmp_path, extra, stops):
    shards, keys = four_shards
    whole = _train_keys(shards, tmp_path / "whole", stops[-1], extra)
    pieces = [batch for stop in stops for batch in _train_keys(shards, tmp_path / "pieces", stop, extra)]
    # The same batches (each worker's stream continues exactly): nothing repeated, nothing skipped. Within the
    # resumed epoch the DataLoader may take the workers' batches in another rotation; later epochs are identical.
    assert len(pieces) == len(whole) and sorted(map(tuple, pieces)) == sorted(map(tuple, whole))
    epoch_steps = 12 if not extra else 6
    assert pieces[epoch_steps:] == whole[epoch_steps:]
    first_epoch = [k for batch in whole[:epoch_steps] for k in batch]
    if not extra:  # exactly once per epoch
        assert sorted(first_epoch) == sorted(keys)
    else:  # samples_per_epoch, with or without a resume in it
        assert len(first_epoch) == len([k for batch in pieces[:epoch_steps] for k in batch]) == 20


def test_stream_position_needs_the_same_ranks_and_workers(four_shards, caplog):
    shards, _ = four_shards
    dm = _dm(f"{shards}/train-*.tar", num_workers=2, batch_size=4)
    state = {
        "num_workers": 2,
        "samples_per_epoch": None,
        "ranks": [{"epoch": 3, "raw": {0: 8, 1: 4}, "out": {0: 8, 1: 4}}],
    }
    dm.load_state_dict(state)
    assert dm.position.epoch == 3 and dm.position.raw == {0: 8, 1: 4}
    assert len(_keys(dm)) == 48 - 12  # the rest of the epoch: 4 + 8 of 24 per worker read already

    other = _dm(f"{shards}/train-*.tar", num_workers=1, batch_size=4)
    other.load_state_dict(state)  # 1 worker cannot map 2 workers' positions: the epoch starts over
    assert "restarts from its beginning" in caplog.text and other.position.raw == {}
    assert sorted(_keys(other)) == sorted(_keys(_dm(f"{shards}/train-*.tar", num_workers=1, batch_size=4)))
