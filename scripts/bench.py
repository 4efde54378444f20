"""`make bench`: training images/s of LatentDiffusionModule vs a plain diffusers-style reference loop.

Both run in this process on the same device, model and batch. The reference does what diffusers'
``train_text_to_image.py`` does each step: VAE encode + text encoder + UNet, unfused AdamW. Ours
trains from cached latents and text features (what ``text2earth data cache-latents`` produces),
with fused AdamW on GPU, SDPA attention, bf16 autocast on GPU, and optionally ``torch.compile``.
CPU: the ``tiny`` preset at 64 px. GPU: the full ``text2earth_sd2`` preset at 256 px.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from text2earth.models.conditioning import encode_text, level_class_labels
from text2earth.training.module import LatentDiffusionModule


def _time(step: Callable[[], None], warmup: int, iters: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def run(
    preset: str, batch_size: int, image_size: int, iters: int, warmup: int, compile: bool, device: torch.device
) -> dict:
    cfg = OmegaConf.create(
        {
            "components": {"preset": preset},
            "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-5},
            "lr_scheduler": None,
            "compile": compile,
        }
    )
    module = LatentDiffusionModule(**cfg).to(device)
    module.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    if device.type == "cuda":  # what on_fit_start does under bf16-mixed
        module.vae.to(torch.bfloat16)
        module.text_encoder.to(torch.bfloat16)
    pixels = torch.rand(batch_size, 3, image_size, image_size, device=device) * 2 - 1
    captions = [f"cropland fields and a river, sample {i}" for i in range(batch_size)]
    levels = torch.full((batch_size,), 15.0, device=device)

    # Reference: the plain loop, everything recomputed each step, unfused AdamW.
    unet = module.unet
    ref_opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, fused=False, foreach=False)
    sched = module.noise_scheduler

    def reference_step() -> None:
        with autocast:
            with torch.no_grad():
                latents = module.vae.encode(pixels.to(module.vae.dtype)).latent_dist.sample().float()
                latents = latents * module.vae.config.scaling_factor
                text = encode_text(module.text_encoder, module.tokenizer, captions, device)
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (batch_size,), device=device)
            noisy = sched.add_noise(latents, noise, t)
            pred = unet(
                noisy, t, encoder_hidden_states=text, class_labels=level_class_labels(levels, module.level_scale)
            ).sample
            loss = F.mse_loss(pred.float(), noise)
        ref_opt.zero_grad(set_to_none=True)
        loss.backward()
        ref_opt.step()

    with torch.no_grad(), autocast:
        cached = {
            "latents": module.encode_images(pixels),
            "encoder_hidden_states": encode_text(module.text_encoder, module.tokenizer, captions, device).float(),
            "level": levels,
        }
    opt = module.configure_optimizers()  # fused AdamW on GPU

    def module_step() -> None:
        with autocast:
            loss = module.diffusion_loss(cached)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    uncached = {"pixel_values": pixels, "caption": captions, "level": levels}

    def module_uncached_step() -> None:  # the same module, VAE + text encoder each step (no latent cache)
        with autocast:
            loss = module.diffusion_loss(uncached)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ref_s = _time(reference_step, warmup, iters, device)
    ours_s = _time(module_step, warmup, iters, device)
    uncached_s = _time(module_uncached_step, warmup, iters, device)
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "preset": preset,
        "batch_size": batch_size,
        "image_size": image_size,
        "compile": compile,
        "reference_img_s": batch_size / ref_s,
        "module_img_s": batch_size / ours_s,
        "ratio": ref_s / ours_s,
        "module_uncached_img_s": batch_size / uncached_s,
        "cached_vs_uncached": uncached_s / ours_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--preset", default="text2earth_sd2" if cuda else "tiny")
    parser.add_argument("--batch-size", type=int, default=64 if cuda else 16)
    parser.add_argument("--image-size", type=int, default=256 if cuda else 64)
    parser.add_argument("--iters", type=int, default=20 if cuda else 10)
    parser.add_argument("--warmup", type=int, default=5 if cuda else 2)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    result = run(args.preset, args.batch_size, args.image_size, args.iters, args.warmup, args.compile, device)
    print(
        f"device: {result['device']}; preset {result['preset']}, batch {result['batch_size']}, {result['image_size']} px"
    )
    print(f"reference loop (VAE + text encoder each step, unfused AdamW): {result['reference_img_s']:8.1f} img/s")
    print(f"LatentDiffusionModule (cached latents/text, fused AdamW on GPU): {result['module_img_s']:8.1f} img/s")
    print(f"ratio: {result['ratio']:.2f}x")
    print(
        f"LatentDiffusionModule without the cache (VAE + text encoder each step): {result['module_uncached_img_s']:8.1f} img/s"
    )
    print(f"latent cache, cached / uncached: {result['cached_vs_uncached']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
