"""Strategy configs build (ddp, fsdp, deepspeed); the EMA on sharded weights (2 real gloo processes, FSDP2); and a
real 2-rank run of Lightning's FSDP with EMA, resume and export, against the same run under DDP."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from hydra.errors import InstantiationException
from probes import console_script, launch_env

from text2earth.core.config import compose_config
from text2earth.core.errors import UserError
from text2earth.training.sharding import sharding_kind

ROOT = Path(__file__).resolve().parents[1]


def _trainer_cfg(tmp_path, *overrides):
    return compose_config("train", ["experiment=demo", *overrides], output_dir=tmp_path).trainer


def test_ddp_config_builds_a_two_process_trainer(tmp_path):
    cfg = _trainer_cfg(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32")
    trainer = hydra.utils.instantiate(cfg)
    assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.world_size == 2
    assert sharding_kind(trainer.strategy) is None and not cfg.use_distributed_sampler


def test_fsdp_config_builds_the_strategy_and_needs_cuda(tmp_path):
    cfg = _trainer_cfg(tmp_path, "trainer=fsdp")
    strategy = hydra.utils.instantiate(cfg.strategy)
    assert type(strategy).__name__ == "FSDPStrategy" and sharding_kind(strategy) == "fsdp"
    assert strategy.sharding_strategy.name == "FULL_SHARD" and strategy.kwargs["use_orig_params"]
    wrapped = {c.__name__ for c in strategy.kwargs["auto_wrap_policy"]._module_classes}
    assert wrapped == {"ResnetBlock2D", "BasicTransformerBlock", "CLIPEncoderLayer"}
    assert cfg.accelerator == "gpu" and cfg.precision == "bf16-mixed"
    # Lightning's FSDP refuses the CPU (README: FSDP needs CUDA).
    with pytest.raises(InstantiationException, match="requires a GPU accelerator"):
        hydra.utils.instantiate(cfg, accelerator="cpu", devices=2, precision="32-true")


def test_deepspeed_config_values_and_one_line_error_without_the_package(tmp_path):
    cfg = _trainer_cfg(tmp_path, "trainer=deepspeed", "trainer.strategy.stage=3")
    assert cfg.strategy.stage == 3 and cfg.accelerator == "gpu" and cfg.precision == "bf16-mixed"
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(InstantiationException) as info:
            hydra.utils.instantiate(cfg.strategy)
        cause = info.value.__cause__
        assert isinstance(cause, UserError) and "deepspeed" in str(cause) and "\n" not in str(cause)
    else:  # pragma: no cover - only where deepspeed is installed
        assert sharding_kind(hydra.utils.instantiate(cfg.strategy)) == "zero3"


def test_rank_zero_sampling_callbacks_switch_off_under_sharded_weights(tmp_path):
    """The sample grid and eval metrics call the UNet on rank 0 alone: under FSDP they stay off (one warning)."""
    from types import SimpleNamespace

    from callbacks.eval_metrics import EvalMetrics
    from callbacks.samples import SampleGridLogger

    module = hydra.utils.instantiate(
        compose_config("train", ["model.components.vae_folder=null"], output_dir=tmp_path).model
    )
    fsdp = SimpleNamespace(strategy=hydra.utils.instantiate(_trainer_cfg(tmp_path, "trainer=fsdp").strategy))
    ddp = hydra.utils.instantiate(
        _trainer_cfg(tmp_path, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32")
    )
    grid = SampleGridLogger(prompts=["farmland"], levels=[12.0], every_n_steps=1)
    metrics = EvalMetrics(
        ["farmland"], [12.0], metrics=["resolution"], every_n_steps=1, estimator_shards="unused-*.tar"
    )
    with pytest.warns(UserWarning, match="sample grid off"):
        grid.on_fit_start(fsdp, module)
    with pytest.warns(UserWarning, match="eval metrics off"):
        metrics.on_fit_start(fsdp, module)
    assert not grid.active and not metrics.active
    grid.on_fit_start(ddp, module)
    metrics.on_fit_start(ddp, module)
    assert grid.active and metrics.active


RANK_SCRIPT = """
import copy, os, sys
import torch, torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank = dist.get_rank()
from callbacks.ema import EMA
from text2earth.models.components import build_from_preset

class Holder(torch.nn.Module):  # stands where the LightningModule does: the EMA reads .unet
    def __init__(self, unet):
        super().__init__()
        self.unet = unet
    def forward(self, x, t, text, labels):
        return self.unet(x, t, encoder_hidden_states=text, class_labels=labels).sample

parts = build_from_preset("tiny", seed=0)
plain = Holder(copy.deepcopy(parts.unet))
sharded = Holder(parts.unet)
mesh = init_device_mesh("cpu", (2,))
for block in [*sharded.unet.down_blocks, *sharded.unet.up_blocks]:
    fully_shard(block, mesh=mesh)
fully_shard(sharded, mesh=mesh)
ema, ref = EMA(decay=0.9, warmup=False), EMA(decay=0.9, warmup=False)
ema.bind(sharded, "dtensor")
ref.bind(plain)
opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (sharded, plain)]
g = torch.Generator().manual_seed(0)  # the same batch on both ranks: the sharded run equals the plain one
for step in range(3):
    x, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, sharded.unet.config.cross_attention_dim, generator=g)
    t, labels = torch.tensor([10, 500]), torch.tensor([12.0, 15.0])
    for model, opt, avg in ((sharded, opts[0], ema), (plain, opts[1], ref)):
        opt.zero_grad()
        model(x, t, text, labels).pow(2).mean().backward()
        opt.step()
        avg.update(model)
local = {n: t.numel() for n, t in ema.shadow.items()}
full = ema.state_dict()["shadow"]  # collective: every rank calls it, rank 0 gets the full tensors
out = sys.argv[1]
if rank == 0:
    assert sum(local.values()) < sum(t.numel() for t in full.values())  # this rank held a slice only
    assert full.keys() == ref.shadow.keys()
    for n, t in full.items():
        torch.testing.assert_close(t, ref.shadow[n], rtol=1e-5, atol=1e-6)
    trained = dict(plain.unet.named_parameters())
    assert any(not torch.allclose(full[n], trained[n].detach()) for n in full)
    torch.save({"shadow": full, "num_updates": 3}, out + "/ema.pt")
dist.barrier()
# Resume: every rank loads the full EMA and takes its own slice; gathering again gives it back.
again = EMA(decay=0.9, warmup=False)
again.load_state_dict(torch.load(out + "/ema.pt", weights_only=True))
again.bind(sharded, "dtensor")
assert {n: t.numel() for n, t in again.shadow.items()} == local
regathered = again.full_shadow()
if rank == 0:
    for n, t in regathered.items():
        torch.testing.assert_close(t, full[n], rtol=0, atol=0)
    open(out + "/ok", "w").write("ok")
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ema_on_sharded_weights_gathers_on_rank0_and_resumes(tmp_path):
    # Lightning's FSDPStrategy needs CUDA; torch's FSDP2 (fully_shard) shards real DTensors on CPU with gloo,
    # so the EMA's slice updates, rank-0 gather and re-slicing on resume run here on 2 real processes.
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent(RANK_SCRIPT))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run([*cmd, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ok").exists()


def test_unsharded_strategies_keep_plain_ema():
    assert sharding_kind(L.Trainer(accelerator="cpu", devices=1, logger=False).strategy) is None


# -- Lightning's FSDP (FSDP1) end to end: 2 gloo ranks through `text2earth train`, against DDP ---------------


def _launch_train(script: Path, run_dir: Path, shards: Path, strategy: list[str], max_steps: int, ckpt: str | None):
    command = [
        str(script),
        "train",
        "experiment=demo",
        *strategy,
        "trainer.devices=2",
        "trainer.precision=32-true",
        "model.components.vae_folder=null",
        "model.lr_scheduler.num_training_steps=6",  # one LR schedule, however the run is cut
        "logger=csv",
        f"data.train_shards={shards}/train-*.tar",
        f"data.val_shards={shards}/train-*.tar",
        "data.build_embedded_if_missing=null",
        "data.batch_size=4",
        "data.num_workers=0",
        f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "callbacks.samples.every_n_steps=0",
        "callbacks.eval_metrics=null",
        f"paths.root_dir={run_dir.parent}",
        f"hydra.run.dir={run_dir}",
    ]
    if ckpt:
        command.append(f"ckpt_path={ckpt}")
    env = {**launch_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_lightning_fsdp_run_with_ema_resume_and_export_matches_ddp(four_shards, tmp_path):
    """FSDP shards the UNet, its EMA and the optimizer state; the checkpoint gathers them, a resumed run slices
    them again, and the export at train end is made from the gathered weights. The same run under DDP (full
    weights on every rank) must give the same exported EMA UNet."""
    from safetensors.torch import load_file

    shards, _ = four_shards
    script = console_script(tmp_path)
    fsdp = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.strategy._target_=probes.CPUFSDPStrategy"]
    exported = {}
    for name, strategy in (("fsdp", fsdp), ("ddp", ["trainer=ddp_cpu"])):
        run_dir = tmp_path / name
        _launch_train(script, run_dir, shards, strategy, 3, None)
        first = run_dir / "checkpoints" / "last.ckpt"
        done = _launch_train(script, run_dir, shards, strategy, 6, str(first))  # resume mid-epoch
        if name == "fsdp":
            assert "gathered from the sharded weights" in done.stdout
        exported[name] = load_file(run_dir / "model" / "unet" / "diffusion_pytorch_model.safetensors")
        final = torch.load(first, map_location="cpu", weights_only=True)
        assert final["global_step"] == 6
        ema = next(v for k, v in final["callbacks"].items() if k.startswith("EMA"))["shadow"]
        # The checkpoint holds the full EMA (gathered), in the plain UNet's names, and it is what was exported.
        assert ema.keys() == exported[name].keys()
        for key, value in ema.items():
            torch.testing.assert_close(exported[name][key], value, rtol=0, atol=0)
        at_step_3 = torch.load(run_dir / "checkpoints" / "step_0000003.ckpt", map_location="cpu", weights_only=True)
        moved = max((at_step_3["callbacks"]["EMA"]["shadow"][k] - v).abs().max().item() for k, v in ema.items())
        assert moved > 1e-5  # training moved the EMA after the resume
    gap = max((exported["fsdp"][k] - exported["ddp"][k]).abs().max().item() for k in exported["ddp"])
    assert gap < 1e-6, gap
