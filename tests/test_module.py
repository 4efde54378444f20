"""The training module on real embedded tiles with the tiny preset (real classes, no mocks)."""

import pytest
import torch
from omegaconf import OmegaConf

from text2earth.models.conditioning import drop_conditions
from text2earth.models.losses import diffusion_target, min_snr_weights
from text2earth.training.module import LatentDiffusionModule

MODEL_CFG = {
    "components": {"preset": "tiny"},
    "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3},
    "lr_scheduler": None,
}


def make_module(**kwargs) -> LatentDiffusionModule:
    cfg = {**MODEL_CFG, **kwargs}
    return LatentDiffusionModule(**OmegaConf.create(cfg))


def test_dropout_rates_are_independent():
    n = 40000
    gen = torch.Generator().manual_seed(0)
    captions, levels = drop_conditions(["x"] * n, torch.full((n,), 15.0), p_text=0.3, p_level=0.2, generator=gen)
    no_text = torch.tensor([c == "" for c in captions])
    no_level = levels == 0
    assert no_text.float().mean() == pytest.approx(0.3, abs=0.01)
    assert no_level.float().mean() == pytest.approx(0.2, abs=0.01)
    assert (no_text & no_level).float().mean() == pytest.approx(0.06, abs=0.006)  # independent: 0.3 * 0.2
    assert set(levels[~no_level].tolist()) == {15.0}


def test_min_snr_weights(tiny_components):
    scheduler = tiny_components.scheduler
    t = torch.tensor([1, 100, 500, 999])
    w = min_snr_weights(scheduler, t, gamma=5.0)
    snr = scheduler.alphas_cumprod[t] / (1 - scheduler.alphas_cumprod[t])
    torch.testing.assert_close(w, torch.clamp(snr, max=5.0) / snr)
    assert w[0] < 0.01 and w[-1] == 1.0
    assert torch.equal(min_snr_weights(scheduler, t, gamma=None), torch.ones(4))
    v_sched = scheduler.__class__.from_config(scheduler.config, prediction_type="v_prediction")
    torch.testing.assert_close(min_snr_weights(v_sched, t, gamma=5.0), torch.clamp(snr, max=5.0) / (snr + 1))
    latents, noise = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    torch.testing.assert_close(diffusion_target(v_sched, latents, noise, t), v_sched.get_velocity(latents, noise, t))
    assert diffusion_target(scheduler, latents, noise, t) is noise


def test_frozen_parts_stay_frozen():
    module = make_module()
    module.train()
    assert not module.vae.training and not module.text_encoder.training and module.unet.training
    assert not any(p.requires_grad for p in module.vae.parameters())
    assert not any(p.requires_grad for p in module.text_encoder.parameters())
    optimizer = module.configure_optimizers()
    n_opt = sum(p.numel() for group in optimizer.param_groups for p in group["params"])
    assert n_opt == sum(p.numel() for p in module.unet.parameters())


@pytest.mark.slow
def test_tiny_model_overfits_a_fixed_batch(real_batch):
    torch.manual_seed(0)
    module = make_module(snr_gamma=None)
    module.train()
    optimizer = torch.optim.Adam(module.unet.parameters(), lr=2e-3)
    batch = {k: v[:8] for k, v in real_batch.items()}
    # Encode once: the VAE posterior sample would otherwise move the target every step.
    batch["latents"] = module.encode_images(batch.pop("pixel_values"))
    losses = []
    for _ in range(100):
        # The same noise and timesteps every step: a fixed regression target the UNet must fit.
        loss = module.diffusion_loss(batch, drop=False, generator=torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_cached_latents_skip_the_vae(real_batch):
    module = make_module()
    latents = module.encode_images(real_batch["pixel_values"][:4])
    assert latents.shape == (4, 4, 16, 16)

    def no_vae(*args, **kwargs):
        raise AssertionError("the VAE must not run when the batch carries latents")

    module.vae.encode = no_vae
    batch = {"latents": latents, "caption": real_batch["caption"][:4], "level": real_batch["level"][:4]}
    loss = module.diffusion_loss(batch)
    assert torch.isfinite(loss)
    with pytest.raises(AssertionError, match="must not run"):
        pixels_only = {k: v for k, v in batch.items() if k != "latents"}
        module.diffusion_loss({**pixels_only, "pixel_values": real_batch["pixel_values"][:4]})


def test_cached_text_features_with_dropout(real_batch):
    module = make_module(p_text=1.0, p_level=0.0)
    from text2earth.models.conditioning import encode_text

    captions = real_batch["caption"][:3]
    hidden = encode_text(module.text_encoder, module.tokenizer, captions)
    text, labels = module.conditions({"encoder_hidden_states": hidden, "level": real_batch["level"][:3]}, drop=True)
    null = encode_text(module.text_encoder, module.tokenizer, [""])
    torch.testing.assert_close(text, null.expand_as(text))  # p_text = 1: every caption dropped
    torch.testing.assert_close(labels, real_batch["level"][:3].float() * module.level_scale)


def test_v_prediction_trains(real_batch):
    module = make_module(components={"preset": "tiny", "prediction_type": "v_prediction"})
    assert module.noise_scheduler.config.prediction_type == "v_prediction"
    loss = module.diffusion_loss({k: v[:4] for k, v in real_batch.items()})
    loss.backward()
    assert module.unet.conv_in.weight.grad.abs().sum() > 0


def test_checkpoint_can_leave_out_frozen_parts():
    module = make_module(save_frozen_in_checkpoint=False)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    prefixes = {k.split(".", 1)[0] for k in checkpoint["state_dict"]}
    assert prefixes == {"unet"}


def test_each_rank_draws_its_own_noise_timesteps_dropout_and_latents(real_batch):
    """Streams are seeded by (seed, rank, step, batch): ranks differ, the same rank replays exactly."""
    module = make_module(seed=7, p_text=0.5, p_level=0.5).train()
    batch = {k: v[:8] for k, v in real_batch.items()}

    def draws(rank: int, step: int = 3) -> tuple[torch.Tensor, ...]:
        generator, cpu = module.random_streams("train", step, 0, rank=rank)
        captions, levels = drop_conditions(batch["caption"], batch["level"], 0.5, 0.5, cpu)
        timesteps = torch.randint(0, 1000, (8,), generator=generator)
        posterior = module.encode_images(batch["pixel_values"], generator)
        noise = torch.randn(posterior.shape, generator=generator)
        return torch.tensor([c == "" for c in captions]), levels, timesteps, posterior, noise

    def loss(rank: int) -> torch.Tensor:
        generator, cpu = module.random_streams("train", 3, 0, rank=rank)
        with torch.no_grad():
            return module.diffusion_loss(batch, generator=generator, cpu_generator=cpu)

    rank0, again, rank1, later = draws(0), draws(0), draws(1), draws(0, step=4)
    for a, b, c, d in zip(rank0, again, rank1, later, strict=True):
        assert torch.equal(a, b)
        assert not torch.equal(a, c) and not torch.equal(a, d)  # another rank, another step: other draws
    assert torch.equal(loss(0), loss(0)) and not torch.equal(loss(0), loss(1))
    assert (
        module.random_streams("train", 3, 0)[0].initial_seed()
        == module.random_streams("train", 3, 0, rank=0)[0].initial_seed()
    )  # without a trainer the module is rank 0
