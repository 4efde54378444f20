"""Latent cache round trip on real tiles: cached latents equal the VAE path and feed training."""

import json

import torch

from data_modules.latent_cache import cache_latents
from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.models.components import build_from_preset


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
