"""Real multi-process training: `text2earth train ... trainer=ddp_cpu trainer.devices=2` (2 ranks, gloo, CPU)
through the console script, killed with SIGKILL mid-run and resumed with the documented command."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch
from probes import console_script, launch_env, read_noise, read_seen

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 6  # per rank: 2 workers x 12 samples / batches of 4


def launch(script: Path, run_dir: Path, shards: Path, seen: Path) -> subprocess.Popen:
    command = [
        str(script),
        "train",
        "experiment=demo",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "model.components.vae_folder=null",
        "logger=csv",
        f"data.train_shards={shards}/train-*.tar",
        f"data.val_shards={shards}/train-*.tar",  # every rank needs val shards: val/loss is synced
        "data.build_embedded_if_missing=null",
        "data.batch_size=4",
        "data.num_workers=2",
        "data.shuffle_buffer=8",
        "trainer.max_steps=12",
        "trainer.val_check_interval=6",
        "trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.samples.every_n_steps=0",
        "callbacks.samples.num_inference_steps=2",
        "callbacks.eval_metrics=null",
        f"+callbacks.seen={{_target_: probes.SeenKeys, folder: '{seen}'}}",
        f"paths.root_dir={run_dir.parent}",
        # the documented relaunch command: the same run folder, the newest checkpoint (none yet: a fresh start)
        f"hydra.run.dir={run_dir}",
        "ckpt_path=last_or_none",
    ]
    env = {**launch_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "OMP_NUM_THREADS": "1"}
    log = open(run_dir.parent / f"{seen.name}.log", "w")  # noqa: SIM115 (closed with the process)
    # A session of its own: SIGKILL to the group reaches both ranks and their DataLoader workers.
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_two_rank_ddp_run_killed_and_resumed(four_shards, tmp_path):
    shards, keys = four_shards
    script, run_dir = console_script(tmp_path), tmp_path / "run"
    first = launch(script, run_dir, shards, tmp_path / "seen_first")
    deadline = time.monotonic() + 400
    while not any(step > STEPS_PER_EPOCH + 1 for step, _ in read_seen(tmp_path / "seen_first")):
        assert first.poll() is None, (tmp_path / "seen_first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no training step 8 in time"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # both ranks, mid-epoch 2, no chance to clean up
    first.wait()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    resumed_from = checkpoint["global_step"]
    assert STEPS_PER_EPOCH <= resumed_from < 12 and not (run_dir / "run_summary.json").exists()

    second = launch(script, run_dir, shards, tmp_path / "seen_second")
    assert second.wait(timeout=400) == 0, (tmp_path / "seen_second.log").read_text()[-3000:]

    # One run folder (ranks relaunched into it by Lightning), finished at the right step, with rank 0's files.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run", "seen_first", "seen_second"]
    summary = (run_dir / "run_summary.json").read_text()
    assert '"global_step": 12' in summary
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 12 and any("EMA" in k for k in final["callbacks"])
    assert (run_dir / "model" / "model_index.json").exists() and list((run_dir / "samples").glob("*.png"))

    # The two ranks drew different noise at every step (per-rank streams), and the same rank replays a step's
    # draws exactly after the resume (streams are derived from the step, not from saved generator state).
    noise = [read_noise(tmp_path / "seen_second", rank) for rank in (0, 1)]
    assert noise[0] and set(noise[0]) == set(noise[1])
    assert all(noise[0][step] != noise[1][step] for step in noise[0])
    before = read_noise(tmp_path / "seen_first", 0)
    assert all(before[s] == noise[0][s] for s in set(before) & set(noise[0]))

    # Every training sample exactly once per epoch across both ranks, counting only the steps the
    # resumed checkpoint held from the killed run.
    steps: dict[int, list[str]] = {}
    for rank in range(2):
        trained = read_seen(tmp_path / "seen_first", rank, resumed_from) + read_seen(tmp_path / "seen_second", rank)
        assert [step for step, _ in trained] == list(range(1, 13))
        for step, batch in trained:
            steps.setdefault(step, []).extend(batch)
    for epoch in range(2):
        seen = [k for step in range(epoch * 6 + 1, epoch * 6 + 7) for k in steps[step]]
        assert sorted(seen) == sorted(keys), f"epoch {epoch}"


# -- launch recipes: render the templates, then ask Lightning which cluster environment they select ----------

SLURM_TASK = {  # what srun sets for task 3 of a 2-node x 2-task job
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "text2earth",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NNODES": "2",
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_NODELIST": "node[07-08]",
}
TORCHRUN_RANK = {  # what torchrun sets for local rank 1 on node 1 of 2 nodes x 2 processes
    "TORCHELASTIC_RUN_ID": "t2e",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "GROUP_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "WORLD_SIZE": "4",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
}


def render(template: str, launcher: str, env: dict[str, str], tmp_path: Path) -> list[str]:
    """Run a launch script with ``launcher`` (srun / torchrun, absent here) replaced by one that prints its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / launcher).write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RENDERED"\n')
    (bin_dir / launcher).chmod(0o755)
    out = tmp_path / f"{launcher}.args"
    run_env = {**os.environ, **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RENDERED": str(out)}
    done = subprocess.run(
        ["bash", str(ROOT / template), "experiment=demo"], env=run_env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return out.read_text().splitlines()


def build_trainer(overrides: list[str], env: dict[str, str], monkeypatch, tmp_path: Path):
    import hydra
    from lightning.fabric.utilities.rank_zero import rank_zero_only as fabric_rank_zero
    from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero

    from text2earth.core.config import compose_config

    # A Trainer built as rank 3 sets the process-wide rank_zero_only.rank: put it back after the test, or
    # every later test in this process would skip its rank-zero work (exports, sample grids).
    for holder in {fabric_rank_zero, utils_rank_zero}:
        monkeypatch.setattr(holder, "rank", getattr(holder, "rank", 0))
    for name in [n for n in os.environ if n.startswith(("SLURM_", "TORCHELASTIC_"))] + list(TORCHRUN_RANK):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Lightning's SLURM environment writes MASTER_ADDR (node07 here) into os.environ while the Trainer is built;
    # left behind, a later multi-process test would rendezvous with a host that does not exist and hang.
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        if not env.get(name):
            monkeypatch.delenv(name)
    cfg = compose_config("train", overrides)
    assert Path(cfg.paths.output_dir) == tmp_path / "run"  # the fixed run folder, not a clock-stamped one
    assert cfg.ckpt_path == "last_or_none"
    return hydra.utils.instantiate(cfg.trainer, logger=False)


def test_slurm_template_selects_slurm_with_auto_requeue(tmp_path, monkeypatch):
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    script = (ROOT / "scripts/slurm/train.sbatch").read_text()
    assert "#SBATCH --signal=SIGUSR1@" in script and "#SBATCH --requeue" in script
    env = {**SLURM_TASK, "TRAINER": "ddp_cpu", "RUN_DIR": str(tmp_path / "run")}
    argv = render("scripts/slurm/train.sbatch", "srun", env, tmp_path)
    assert argv[:2] == ["text2earth", "train"]
    trainer = build_trainer(argv[2:], SLURM_TASK, monkeypatch, tmp_path)
    cluster = trainer.strategy.cluster_environment
    assert isinstance(cluster, SLURMEnvironment) and cluster.auto_requeue
    assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 2, 4)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (3, 1, 1)
    assert cluster.main_address == "node07"


def test_torchrun_recipe_selects_torchelastic(tmp_path, monkeypatch):
    from lightning.pytorch.plugins.environments import TorchElasticEnvironment

    env = {"NNODES": "2", "NPROC_PER_NODE": "2", "TRAINER": "ddp_cpu", "RUN_DIR": str(tmp_path / "run")}
    argv = render("scripts/torchrun/train.sh", "torchrun", env, tmp_path)
    module = argv.index("-m")
    assert "--nnodes=2" in argv[:module] and "--nproc-per-node=2" in argv[:module]
    assert argv[module + 1 : module + 3] == ["text2earth.cli.main", "train"]
    trainer = build_trainer(argv[module + 3 :], TORCHRUN_RANK, monkeypatch, tmp_path)
    assert isinstance(trainer.strategy.cluster_environment, TorchElasticEnvironment)
    assert (trainer.num_nodes, trainer.world_size, trainer.global_rank, trainer.local_rank) == (2, 4, 3, 1)


def _whole_checkpoint(path: Path) -> Path:
    """A file with a zip directory: what a finished torch.save writes (the resolver checks no more)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"")
    return path


def test_ckpt_path_last_takes_the_newest_whole_checkpoint(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from text2earth.core.errors import UserError
    from text2earth.training.run import resolve_ckpt_path

    trainer = L.Trainer(
        default_root_dir=tmp_path, callbacks=[ModelCheckpoint(dirpath=tmp_path / "checkpoints")], logger=False
    )
    assert resolve_ckpt_path("last_or_none", trainer) is None  # first launch: a fresh start, no error
    with pytest.raises(UserError, match="nothing to resume"):
        resolve_ckpt_path("last", trainer)  # asked to resume: there must be something to resume
    (tmp_path / "checkpoints").mkdir()
    last = _whole_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    (tmp_path / "checkpoints" / "last.ckpt.tmp").write_bytes(b"")  # half-written: never chosen
    assert resolve_ckpt_path("last", trainer) == str(last)
    hpc = tmp_path / "hpc_ckpt_1.ckpt"  # saved by Lightning on SLURM's requeue signal, after last.ckpt
    hpc.write_bytes(b"PK\x03\x04 torn")  # killed mid-save (Lightning does not write it atomically): skipped
    os.utime(last, (time.time() - 60, time.time() - 60))
    assert resolve_ckpt_path("last_or_none", trainer) == str(last)
    _whole_checkpoint(hpc)
    assert resolve_ckpt_path("last", trainer) == str(hpc)
    assert resolve_ckpt_path(None, trainer) is None and resolve_ckpt_path(str(last), trainer) == str(last)
    with pytest.raises(UserError, match="does not exist"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), trainer)
