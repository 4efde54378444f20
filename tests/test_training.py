"""Training end to end through Hydra on real embedded shards: every experiment, EMA, export -> load."""

import json
import types

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from callbacks.ema import EMA
from text2earth.cli.main import main as cli_main
from text2earth.core.config import compose_config
from text2earth.core.paths import shipped
from text2earth.models.level_range import read_level_range
from text2earth.pipelines.text2img import Text2EarthPipeline
from text2earth.training.ema import ema_weights_from_checkpoint
from text2earth.training.export import export_checkpoint, load_checkpoint
from text2earth.training.run import train


def tiny_overrides(shards, out) -> list[str]:
    return [
        f"data.train_shards={shards}/train-*.tar",
        f"data.val_shards={shards}/val-*.tar",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.shuffle_buffer=16",
        "logger=csv",
        "trainer=cpu",
        f"paths.root_dir={out}",
    ]


def run(name: str, shards, tmp_path, extra=()) -> dict:
    out = tmp_path / name
    cfg = compose_config("train", [f"experiment={name}", *tiny_overrides(shards, tmp_path), *extra], output_dir=out)
    return train(cfg)


def test_demo_autoencoder_fast_dev_run(embedded_shards, tmp_path):
    result = run("demo_autoencoder", embedded_shards, tmp_path, ["debug=fast"])
    assert result["global_step"] == 1
    assert (tmp_path / "demo_autoencoder" / "model" / "config.json").exists()  # exported VAE


def test_demo_fast_dev_run(embedded_shards, tmp_path):
    result = run(
        "demo",
        embedded_shards,
        tmp_path,
        ["debug=fast", "model.components.vae_folder=null", "callbacks.samples.num_inference_steps=2"],
    )
    assert result["global_step"] == 1
    assert (tmp_path / "demo" / "model" / "model_index.json").exists()
    assert list((tmp_path / "demo" / "samples").glob("*.png"))


@pytest.mark.parametrize("name", ["pretrain", "finetune"])
def test_full_scale_experiments_fast_dev_run(name, embedded_shards, tmp_path):
    # The real experiment files with only the model shrunk to the tiny preset and the data pointed
    # at the embedded shards; everything else (loss settings, callbacks, checkpoints) as configured.
    source = "sd2_folder" if name == "pretrain" else "folder"
    extra = [
        "debug=fast",
        "model.components.preset=tiny",
        f"model.components.{source}=null",
        "data.image_size=64",
        "callbacks.samples.num_inference_steps=2",
    ]
    if name == "finetune":
        extra.append("data.min_quality=null")
    result = run(name, embedded_shards, tmp_path, extra)
    assert result["global_step"] == 1


@pytest.mark.slow
def test_train_ema_checkpoint_export_reload(embedded_shards, tmp_path):
    result = run(
        "demo",
        embedded_shards,
        tmp_path,
        [
            "model.components.vae_folder=null",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "trainer.limit_val_batches=1",
            "callbacks.model_checkpoint.every_n_train_steps=2",
            "callbacks.samples.every_n_steps=0",
            "callbacks.samples.at_train_end=false",
            "callbacks.ema.decay=0.5",
        ],
    )
    run_dir = tmp_path / "demo"
    assert result["global_step"] == 4
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["global_step"] == 4 and "val/loss" in summary["metrics"]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.exists() and not list(run_dir.glob("checkpoints/*.tmp"))

    checkpoint = load_checkpoint(last)  # weights_only=True: plain containers only
    shadow = ema_weights_from_checkpoint(checkpoint)
    module = result["model"]
    trained = dict(module.unet.named_parameters())
    assert any(not torch.equal(shadow[n], trained[n].detach()) for n in shadow)  # EMA != raw weights

    exported = export_checkpoint(last, tmp_path / "exported")
    # The export records the levels the batches held (the embedded tiles: 160 m .. 10 m).
    histogram = {float(k): n for k, n in checkpoint["level_histogram"].items()}
    assert sum(histogram.values()) > 0 and read_level_range(exported) == (min(histogram), max(histogram))
    assert min(histogram) > 9.6 and max(histogram) < 13.7
    # the CLI does the same, and a missing checkpoint is a one-line error
    assert cli_main(["export", str(last), "--out", str(tmp_path / "exported_cli")]) == 0
    assert (tmp_path / "exported_cli" / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert cli_main(["export", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")]) == 2
    # --dtype fp16: diffusers variant files holding the EMA weights rounded to fp16
    assert cli_main(["export", str(last), "--out", str(tmp_path / "fp16"), "--dtype", "fp16"]) == 0
    half = Text2EarthPipeline.from_pretrained(tmp_path / "fp16", torch_dtype=torch.float16, variant="fp16")
    assert (tmp_path / "fp16" / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    for name, p in half.unet.named_parameters():
        torch.testing.assert_close(p.detach(), shadow[name].half(), rtol=0, atol=0)
    pipe = Text2EarthPipeline.from_pretrained(exported)
    for name, p in pipe.unet.named_parameters():  # the folder holds the EMA weights
        torch.testing.assert_close(p.detach(), shadow[name], rtol=0, atol=0)

    # The same EMA weights sampled straight from the training module give identical pixels.
    ema = next(cb for cb in result["trainer"].callbacks if isinstance(cb, EMA))
    with ema.swapped(module):
        direct = Text2EarthPipeline.from_components(module.components)
        kwargs = {"level": 13.7, "num_inference_steps": 3, "output_type": "np"}
        a = direct("cropland fields", generator=torch.Generator().manual_seed(3), **kwargs).images
    b = pipe("cropland fields", generator=torch.Generator().manual_seed(3), **kwargs).images
    np.testing.assert_array_equal(a, b)
    # and the raw weights came back after the swap
    for n, p in module.unet.named_parameters():
        assert torch.equal(p.detach(), trained[n].detach())

    # The export from the end-of-training callback matches the one from the checkpoint.
    callback_export = Text2EarthPipeline.from_pretrained(run_dir / "model")
    c = callback_export("cropland fields", generator=torch.Generator().manual_seed(3), **kwargs).images
    np.testing.assert_array_equal(b, c)

    # Resume continues from the checkpoint's step.
    resumed = run(
        "demo",
        embedded_shards,
        tmp_path / "resume",
        [
            "model.components.vae_folder=null",
            "trainer.max_steps=6",
            "trainer.val_check_interval=2",
            "trainer.limit_val_batches=1",
            "callbacks.samples.every_n_steps=0",
            "callbacks.samples.at_train_end=false",
            f"ckpt_path={last}",
        ],
    )
    assert resumed["global_step"] == 6


def test_ema_update_rule_and_swap():
    net = torch.nn.Linear(2, 1, bias=False)
    holder = types.SimpleNamespace(unet=net)
    ema = EMA(decay=0.9, warmup=False)
    ema.shadow = {"weight": net.weight.detach().clone()}
    old = ema.shadow["weight"].clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.on_optimizer_step(types.SimpleNamespace(global_step=1), holder)
    expected = 0.9 * old + 0.1 * net.weight.detach()
    torch.testing.assert_close(ema.shadow["weight"], expected)
    raw = net.weight.detach().clone()
    with ema.swapped(holder):
        torch.testing.assert_close(net.weight.detach(), expected)
    torch.testing.assert_close(net.weight.detach(), raw)
    warm = EMA(decay=0.9999)
    assert warm.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): early updates forget the init
    warm.num_updates = 10**6
    assert warm.current_decay() == 0.9999


@pytest.mark.slow
def test_bf16_mixed_with_grad_accumulation_sample_and_eval_callbacks(embedded_shards, tmp_path):
    """bf16-mixed on CPU through the sample grid and eval callbacks, 2 micro-batches per optimizer step:
    callbacks fire per optimizer step, and checkpoints and exports keep the frozen parts' exact weights."""
    from safetensors.torch import load_file

    source_vae = shipped("demo") / "vae"
    result = run(
        "demo",
        embedded_shards,
        tmp_path,
        [
            f"model.components.vae_folder={source_vae}",
            "trainer.precision=bf16-mixed",
            "trainer.max_steps=3",
            "+trainer.accumulate_grad_batches=2",
            "trainer.limit_val_batches=0",
            "model.gradient_checkpointing=true",
            "callbacks.model_checkpoint.every_n_train_steps=1",
            "callbacks.model_checkpoint.keep_last=2",
            "callbacks.model_checkpoint.optimizer_in_step_files=false",
            "callbacks.samples.every_n_steps=1",
            "callbacks.samples.at_train_end=false",
            "callbacks.samples.num_inference_steps=1",
            "callbacks.samples.prompts=[farmland]",
            "callbacks.samples.levels=[0,13]",
            "callbacks.eval_metrics.every_n_steps=2",
            "callbacks.eval_metrics.metrics=[resolution]",
            "callbacks.eval_metrics.prompts=[farmland]",
            "callbacks.eval_metrics.levels=[13.0]",
            "callbacks.eval_metrics.images_per_prompt=1",
            "callbacks.eval_metrics.num_inference_steps=1",
            f"callbacks.eval_metrics.estimator_shards={embedded_shards}/train-*.tar",
            "callbacks.eval_metrics.estimator_every=25",
            "callbacks.eval_metrics.estimator_epochs=1",
            "callbacks.throughput.window=3",
        ],
    )
    run_dir, module, trainer = tmp_path / "demo", result["model"], result["trainer"]
    assert result["global_step"] == 3 and module.unet.is_gradient_checkpointing
    # once per optimizer step (3), not per micro-batch (6)
    assert next(cb for cb in trainer.callbacks if isinstance(cb, EMA)).num_updates == 3
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == [f"step_000000{i}.png" for i in (1, 2, 3)]
    assert [p.name for p in (run_dir / "eval").iterdir()] == ["step_0000002"]
    assert "eval/level_mae" in trainer.callback_metrics or np.isfinite(
        next(cb for cb in trainer.callbacks if type(cb).__name__ == "EvalMetrics").last["eval/level_mae"]
    )
    assert "train/images_per_s" in trainer.callback_metrics
    # the frozen parts ran in bf16 during fit, but nothing rounded leaks out: the exported VAE is the source VAE
    source = load_file(source_vae / "diffusion_pytorch_model.safetensors")
    exported = load_file(run_dir / "model" / "vae" / "diffusion_pytorch_model.safetensors")
    assert source.keys() == exported.keys()
    assert all(exported[k].dtype == source[k].dtype and torch.equal(exported[k], source[k]) for k in source)
    state = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(state[f"vae.{k}"], v) for k, v in source.items())
    encoder = load_file(run_dir / "model" / "text_encoder" / "model.safetensors")
    assert all(torch.equal(state[f"text_encoder.{k}"], v) for k, v in encoder.items() if f"text_encoder.{k}" in state)
    assert module.vae.dtype == torch.float32 and module.unet.dtype == torch.float32  # fp32 again after fit
    # retention: the newest 2 step files, without optimizer state (EMA kept: export reads it); last.ckpt resumes
    files = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert files == ["last.ckpt", "step_0000002.ckpt", "step_0000003.ckpt"]
    step_file = load_checkpoint(run_dir / "checkpoints" / "step_0000003.ckpt")
    assert "optimizer_states" not in step_file and ema_weights_from_checkpoint(step_file)
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["optimizer_states"]


TASKS = (
    ["pretrain", "finetune", "inpaint"]
    + [f"translate_{t}" for t in ("pan2rgb", "nir2rgb", "pan2nir", "sar2rgb", "sr", "dehaze")]
    + [f"cross_modal_{m}" for m in ("nir", "pan", "sar")]
)


@pytest.mark.parametrize("name", TASKS)
def test_every_task_composes_at_both_scales(name, tmp_path):
    # The published model (1.3 B parameters) does not fit a CPU test: compose and check what the scale decides.
    filled = ["model.components.folder=/models/Text2Earth", "model.components.sd2_folder=/models/sd2"]
    pairs = [] if name in ("pretrain", "finetune", "inpaint") else ["data.pairs_dir=/data/pairs256"]
    published = compose_config(
        "train",
        [f"experiment={name}", "scale=published", *pairs, *filled],
        output_dir=tmp_path,
    )
    assert published.model.components.preset is None
    assert published.model.optimizer.lr <= 1e-4 and published.trainer.max_steps >= 20000
    assert published.trainer.strategy._target_.endswith("DDPStrategy") and published.trainer.precision == "bf16-mixed"
    assert published.data.image_size == 256 and "wandb" in published.logger
    retention = published.callbacks.model_checkpoint  # bounded disk for 1.3 B parameters (README: Training at scale)
    assert retention.keep_last == 3 and retention.optimizer_in_step_files is False and retention.save_last
    cpu = compose_config("train", [f"experiment={name}", "scale=cpu"], output_dir=tmp_path)
    assert cpu.trainer.accelerator == "cpu" and cpu.trainer.max_steps <= 2000 and cpu.data.image_size == 64
    assert cpu.model.components.preset == "tiny" or cpu.model.components.folder.endswith("demo")
    for cfg in (published, cpu):  # everything resolves (interpolations, no missing values)
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
    native = "published" if name in ("pretrain", "finetune", "inpaint") else "cpu"
    default = compose_config("train", [f"experiment={name}", *filled], output_dir=tmp_path)
    assert default.trainer.max_steps == (published if native == "published" else cpu).trainer.max_steps
