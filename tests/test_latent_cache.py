"""Latent cache round trip on real tiles: cached latents equal the VAE path and feed training."""

import json
from pathlib import Path

import pytest
import torch
from damaged import damaged_copy

from data_modules.latent_cache import cache_latents
from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.cli.main import main
from text2earth.io.shards import read_shard_samples
from text2earth.models.components import build_from_preset
from text2earth.models.conditioning import encode_text


def test_cached_latents_match_the_vae_and_train(embedded_small, tmp_path):
    vae = build_from_preset("tiny").vae.eval()
    vae.save_pretrained(tmp_path / "vae")
    counts = cache_latents(f"{embedded_small}/val-*.tar", tmp_path / "vae", tmp_path / "cache", progress=False)
    n_val = json.loads((embedded_small / "manifest.json").read_text())["counts"]["split"]["val"]
    assert counts["skipped"] == 0 and counts["samples"] == n_val

    dm = ShardDataModule(f"{tmp_path}/cache/val-*.tar", f"{tmp_path}/cache/val-*.tar", batch_size=8, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["latents"].shape == (8, 4, 16, 16)
    with torch.no_grad():
        direct = vae.encode(batch["pixel_values"]).latent_dist.mean * vae.config.scaling_factor
        # fp16 storage: equal to half precision
        torch.testing.assert_close(batch["latents"], direct, rtol=2e-3, atol=2e-3)
        decoded_cached = vae.decode(batch["latents"] / vae.config.scaling_factor).sample
        decoded_direct = vae.decode(direct / vae.config.scaling_factor).sample
    assert (decoded_cached - decoded_direct).abs().max() < 1e-2


def test_flipped_copy_is_the_flipped_images_latent_and_is_used_by_flips(embedded_small, tmp_path):
    from data_modules.latent_cache import cache_latents as cache

    vae = build_from_preset("tiny").vae.eval()
    vae.save_pretrained(tmp_path / "vae")
    shard = sorted(embedded_small.glob("val-*.tar"))[0]
    cache(str(shard), tmp_path / "vae", tmp_path / "cache", progress=False, flip=True)
    cached = f"{tmp_path}/cache/{shard.name}"
    plain = ShardDataModule(cached, cached, batch_size=16, num_workers=0)
    plain.setup("fit")
    reference = next(iter(plain.val_dataloader()))
    with torch.no_grad():
        direct = vae.encode(reference["pixel_values"].flip(-1)).latent_dist.mean * vae.config.scaling_factor
    dm = ShardDataModule(cached, batch_size=64, num_workers=0, shuffle_buffer=0, random_flip=True, seed=1)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    flipped = [i for i in range(16) if not torch.equal(batch["pixel_values"][i], reference["pixel_values"][i])]
    assert batch["key"][:16] == reference["key"] and 2 <= len(flipped) <= 14
    for i in flipped:
        torch.testing.assert_close(batch["latents"][i], direct[i], rtol=2e-3, atol=2e-3)
        assert not torch.allclose(batch["latents"][i], reference["latents"][i].flip(-1), atol=1e-4)


def _model_folder(tmp_path):
    """The tiny model as a folder (vae/, text_encoder/, tokenizer/, ...), as the cache command reads it."""
    from text2earth.models.components import save_folder

    parts = build_from_preset("tiny", seed=0)
    save_folder(parts, tmp_path / "model")
    return parts, tmp_path / "model"


def _keys(folder, pattern="*.tar"):
    from text2earth.io.shards import read_shard_samples

    return [s["__key__"] for shard in sorted(folder.glob(pattern)) for s in read_shard_samples(shard)]


@pytest.mark.slow
def test_posterior_and_text_cache_round_trip_resume_and_two_processes(embedded_small, tmp_path):
    parts, model = _model_folder(tmp_path)
    cache_dir = tmp_path / "cache"
    pattern = f"{embedded_small}/val-*.tar"
    inputs = sorted(embedded_small.glob("val-*.tar"))
    assert len(inputs) >= 2
    # A partial run (one shard done, one left half-written), then the same command completes the rest.
    first = cache_latents(str(inputs[0]), model, cache_dir, progress=False)
    done_at = (cache_dir / inputs[0].name).stat().st_mtime_ns
    (cache_dir / (inputs[1].name + ".tmp")).write_bytes(b"interrupted")
    rest = cache_latents(pattern, model, cache_dir, progress=False)
    assert rest["kept"] == 1 and rest["shards"] == len(inputs) - 1
    assert (cache_dir / inputs[0].name).stat().st_mtime_ns == done_at  # the finished shard was kept
    assert first["samples"] + rest["samples"] == len(_keys(embedded_small, "val-*.tar"))
    assert not list(cache_dir.glob("*.tmp")) and sorted(_keys(cache_dir)) == sorted(_keys(embedded_small, "val-*.tar"))

    # Two processes ("2 CPU devices") write disjoint shards that cover every sample once.
    two = cache_latents(pattern, model, tmp_path / "two", progress=False, devices=2, text=False)
    assert set(two["written_by"].values()) == {0, 1} and len(two["written_by"]) == len(inputs)
    keys = _keys(tmp_path / "two")
    assert len(keys) == len(set(keys)) and sorted(keys) == sorted(_keys(embedded_small, "val-*.tar"))

    # Mean / std / text states round trip through the DataModule into the batch.
    manifest = json.loads((cache_dir / "latent_cache.json").read_text())
    assert manifest["image_size"] == "native" and manifest["pixel_sizes"] == [64] and manifest["text_states"]
    dm = ShardDataModule(f"{cache_dir}/val-*.tar", f"{cache_dir}/val-*.tar", batch_size=8, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    vae = parts.vae.eval()
    with torch.no_grad():
        posterior = vae.encode(batch["pixel_values"]).latent_dist
        states = encode_text(parts.text_encoder, parts.tokenizer, batch["caption"])
    scale = vae.config.scaling_factor
    assert batch["latents"].shape == batch["latents_std"].shape == (8, 4, 16, 16)  # 64 px: the data's own size
    torch.testing.assert_close(batch["latents"], posterior.mean * scale, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(batch["latents_std"], posterior.std * scale, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(batch["encoder_hidden_states"], states, rtol=2e-3, atol=2e-3)
    assert "encoder_hidden_states" not in next(iter(_dm_val(tmp_path / "two")))  # --no-text


def _dm_val(folder):
    dm = ShardDataModule(f"{folder}/val-*.tar", f"{folder}/val-*.tar", batch_size=8, num_workers=0)
    dm.setup("fit")
    return dm.val_dataloader()


def test_native_size_is_the_default_not_the_vae_sample_size(embedded_small, tmp_path):
    vae = build_from_preset("tiny").vae.eval()
    vae.register_to_config(sample_size=128)  # an SD2-like VAE config bigger than the 64-px tiles (old default)
    vae.save_pretrained(tmp_path / "vae")
    shard = sorted(embedded_small.glob("val-*.tar"))[0]
    cache_latents(str(shard), tmp_path / "vae", tmp_path / "native", progress=False)
    cache_latents(str(shard), tmp_path / "vae", tmp_path / "sized", progress=False, image_size=32)
    assert next(iter(_dm_val(tmp_path / "native")))["latents"].shape[-1] == 16
    assert next(iter(_dm_val(tmp_path / "sized")))["latents"].shape[-1] == 8


def test_module_samples_the_cached_posterior_and_trains(embedded_small, tmp_path):
    from text2earth.training.module import LatentDiffusionModule

    _, model = _model_folder(tmp_path)
    shard = sorted(embedded_small.glob("val-*.tar"))[0]
    cache_latents(str(shard), model, tmp_path / "cache", progress=False, batch_size=32)
    batch = next(iter(_dm_val(tmp_path / "cache")))
    module = LatentDiffusionModule(
        components={"folder": str(model)},
        optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3},
        p_text=0.0,
        p_level=0.0,
        snr_gamma=None,
    )
    # The text encoder runs once, for the empty prompt (caption dropout); batches use the cached states.
    module.null_text_embedding()
    module.text_encoder.forward = None
    mean_only = {k: v for k, v in batch.items() if k != "latents_std"}  # a cache of the older format
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    a = module.diffusion_loss(batch, drop=False, generator=gen())
    b = module.diffusion_loss(batch, drop=False, generator=gen())
    c = module.diffusion_loss(mean_only, drop=False, generator=gen())
    assert torch.equal(a, b) and not torch.equal(a, c)  # reproducible per generator; the std is used
    # One optimiser step from the cache changes the UNet.
    before = [p.detach().clone() for p in module.unet.parameters()]
    opt = torch.optim.AdamW(module.unet.parameters(), lr=1e-3)
    module.diffusion_loss(batch, drop=True).backward()
    opt.step()
    assert any(not torch.equal(p0, p) for p0, p in zip(before, module.unet.parameters(), strict=True))


def test_cache_cli_counts_what_a_truncated_shard_lost_and_records_its_own_counts(embedded_small, tmp_path, capsys):
    """Input: a shard cut to half its size, whose manifest records its count: the samples after the damage are
    counted. Output: latent_cache.json records every cache shard's count, so a truncated copy of the cache
    is counted the same way by the DataModule."""
    folder, recorded = damaged_copy(Path(embedded_small), tmp_path / "d", lambda b: len(b) // 2)
    vae = build_from_preset("tiny").vae.eval()
    vae.save_pretrained(tmp_path / "vae")
    cache = tmp_path / "cache"
    argv = ["data", "cache-latents", f"{folder}/val-*.tar", "--model", str(tmp_path / "vae"), "--batch-size", "16"]
    assert main([*argv, "--out", str(cache)]) == 0
    report = json.loads((cache / "latent_cache.json").read_text())
    lost = sum(recorded.values()) - report["samples"]
    assert recorded["val-000000.tar"] // 4 < lost < recorded["val-000000.tar"] and report["skipped"] == 0
    assert (report["damaged_shards"], report["lost_samples"], report["lost_exact"]) == (1, lost, True)
    assert f"damaged shards 1 ({lost} samples lost)" in capsys.readouterr().out

    written = {p.name: sum(1 for _ in read_shard_samples(p)) for p in sorted(cache.glob("val-*.tar"))}
    assert report["shard_samples"] == written and sum(written.values()) == report["samples"]
    whole = (cache / "val-000001.tar").read_bytes()
    (cache / "val-000001.tar").write_bytes(whole[: len(whole) // 2])
    dm = ShardDataModule(f"{cache}/val-*.tar", f"{cache}/val-*.tar", batch_size=8, num_workers=0)
    dm.setup("fit")
    keys = [k for batch in dm.val_dataloader() for k in batch["key"]]
    assert written["val-000001.tar"] // 4 < dm.skipped_samples == report["samples"] - len(keys)
