"""Fault injection: the bad-input sweep (tests/faults/cases.py), interrupted training (SIGKILL mid-run and
between the step file and ``last.ckpt``), a full disk (writes raising ENOSPC) and runs from another working
directory. ``python -m tests.faults`` replays the sweep alone and prints the counts per command."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest
import torch

from tests.faults.cases import CASES
from tests.faults.runner import argv_of, case_folder, run_case
from tests.faults.workspace import build_workspace
from text2earth.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, str]:
    return build_workspace(tmp_path_factory.mktemp("faults") / "ws")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_sweep(case, ws):
    """Each case: a one-line exit 2 with the expected words and nothing written, or the correct result."""
    outcome = run_case(case, ws)
    assert outcome.passed, f"{outcome.verdict}: {outcome.detail}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train/key-typo", "stats/pipe-manifest"])
def test_one_line_from_a_real_process(name, ws):
    """The same cases through a real process: stderr is exactly one line (no warnings, no traceback)."""
    case = next(c for c in CASES if c.name == name)
    folder = case_folder(Path(ws["root"]), case)
    folder.mkdir(parents=True, exist_ok=True)
    argv = argv_of(case, ws, folder)
    proc = subprocess.run(
        [sys.executable, "-m", "text2earth.cli.main", *argv], env=ENV, capture_output=True, text=True, cwd=folder
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("text2earth: error:"), proc.stderr
    assert case.match.lower() in lines[0].lower() and not any(folder.iterdir())
    assert not Path(ws["pwned"]).exists()


# -- interrupted training ----------------------------------------------------------------------------
def train_overrides(ws: dict[str, str], root: Path) -> list[str]:
    return [
        "experiment=demo",
        "model.components.vae_folder=null",
        f"data.train_shards={ws['shards']}/train-*.tar",
        "data.val_shards=null",
        "data.build_embedded_if_missing=null",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.image_size=32",
        "data.shuffle_buffer=8",
        "logger=csv",
        "trainer=cpu",
        "trainer.max_steps=6",
        "callbacks.samples=null",
        "callbacks.eval_metrics=null",
        "callbacks.export=null",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        f"paths.root_dir={root}",
    ]


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _counts(checkpoint: dict) -> tuple[int, int, int]:
    """(global step, optimizer steps, EMA updates) of a checkpoint."""
    state = checkpoint["optimizer_states"][0]["state"]
    optimizer_step = int(next(iter(state.values()))["step"])
    ema = next(v for k, v in checkpoint["callbacks"].items() if "EMA" in k)
    return checkpoint["global_step"], optimizer_step, ema["num_updates"]


@pytest.fixture(scope="module")
def killed_run(ws, tmp_path_factory):
    """An uninterrupted reference run, and the same run SIGKILLed after step 4's step file, before its last.ckpt."""
    root = tmp_path_factory.mktemp("killed")
    reference, run = root / "reference", root / "run"
    assert main(["train", *train_overrides(ws, root), f"hydra.run.dir={reference}"]) == 0
    kill = [
        "callbacks.model_checkpoint._target_=tests.faults.kill.KillBetweenCheckpoints",
        "+callbacks.model_checkpoint.kill_at_step=4",
    ]
    argv = ["train", *train_overrides(ws, root), f"hydra.run.dir={run}", *kill]
    proc = subprocess.run([sys.executable, "-m", "text2earth.cli.main", *argv], env=ENV, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-3000:]
    return reference, run


@pytest.mark.slow
def test_sigkill_between_step_file_and_last_then_resume(killed_run):
    reference, run = killed_run
    checkpoints = run / "checkpoints"
    # The kill came after step_0000004.ckpt and before last.ckpt: last.ckpt is still at step 2.
    assert _ckpt(checkpoints / "last.ckpt")["global_step"] == 2 and (checkpoints / "step_0000004.ckpt").is_file()
    step4 = (checkpoints / "step_0000004.ckpt").stat().st_mtime_ns
    (checkpoints / "last.ckpt.tmp").write_bytes(b"PK\x03\x04 torn by a kill mid-write")

    # The documented resume: the run folder only (kill_at_step=-1: this process must not kill itself).
    assert main(["train", f"resume={run}", "callbacks.model_checkpoint.kill_at_step=-1"]) == 0

    final, expected = _ckpt(checkpoints / "last.ckpt"), _ckpt(reference / "checkpoints" / "last.ckpt")
    assert _counts(final) == _counts(expected) == (6, 6, 6)
    # Resumed from the step file (nothing lost: step 4 was not trained again, so its file was not rewritten),
    # no NAME-v1 duplicate, the torn temporary file cleaned up.
    assert (checkpoints / "step_0000004.ckpt").stat().st_mtime_ns == step4
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "last.ckpt",
        "step_0000002.ckpt",
        "step_0000004.ckpt",
        "step_0000006.ckpt",
    ]


def test_ckpt_path_last_without_a_checkpoint_is_an_error(ws, tmp_path, capsys):
    argv = ["train", *train_overrides(ws, tmp_path), f"hydra.run.dir={tmp_path / 'run'}", "ckpt_path=last"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to resume" in err[0] and "last_or_none" in err[0]
    assert not (tmp_path / "run").exists()


# -- a full disk ---------------------------------------------------------------------------------------
def _disk_full(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_disk_full_while_generating(ws, tmp_path, monkeypatch, capsys):
    """The second image's write fails half-way: one line saying so and what is missing; no torn file."""
    save, calls = PIL.Image.Image.save, []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            Path(fp).write_bytes(b"\x89PNG half")
            raise _disk_full(fp)
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", failing_save)
    out = tmp_path / "gen"
    argv = ["generate", "fields", "--model", ws["model"], "--gsd", "10", "--steps", "1", "--n", "3"]
    assert main([*argv, "--height", "32", "--width", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    # After the sampling bar (the failure came at the end), one line of error.
    assert "Traceback" not in err and err.count("text2earth: error:") == 1, err
    assert "the disk is full" in err.splitlines()[-1] and "wrote 1 of 3 images" in err.splitlines()[-1], err
    assert sorted(p.name for p in out.iterdir()) == ["000_L13.6781_seed0.png"]
    PIL.Image.open(out / "000_L13.6781_seed0.png").load()  # the one written is whole


@pytest.mark.slow
def test_disk_full_while_checkpointing_and_exporting(ws, killed_run, tmp_path, monkeypatch, capsys):
    import lightning.fabric.plugins.io.torch_io as torch_io
    import safetensors.torch

    def failing_write(_data, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a file")
        raise _disk_full(path)

    # A checkpoint save that runs out of space: one line, no torn NAME.ckpt.tmp left in the run folder.
    monkeypatch.setattr(torch_io, "_atomic_save", failing_write)
    run = tmp_path / "run"
    assert main(["train", *train_overrides(ws, tmp_path), "trainer.max_steps=2", f"hydra.run.dir={run}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0], err
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]

    # An export that runs out of space: the folder is either absent or whole, never half-written.
    monkeypatch.setattr(safetensors.torch, "save_file", failing_write)
    out = tmp_path / "exported"
    assert main(["export", str(killed_run[0] / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the disk is full" in err[0], err
    assert not out.exists() and not list(tmp_path.glob("exported*"))


# -- any working directory -------------------------------------------------------------------------------
def test_shipped_translator_and_paths_from_another_directory(ws, tmp_path, monkeypatch, capsys):
    """The default translator names its base model relative to itself: it loads from any working directory."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "rgb.png"
    assert main(["translate", ws["gray"], "--task", "pan2rgb", "--steps", "1", "--out", str(out)]) == 0
    assert PIL.Image.open(out).size == (32, 32)
    gen = ["generate", "fields", "--model", ws["model"], "--gsd", "10", "--steps", "1", "--n", "1"]
    assert main([*gen, "--height", "32", "--width", "32", "--out", "rel"]) == 0
    assert (tmp_path / "rel" / "grid.png").is_file()


# -- memory and data ----------------------------------------------------------------------------------------
def test_out_of_memory_while_sampling_is_one_line_with_the_need(ws, tmp_path, monkeypatch, capsys):
    from text2earth.pipelines.text2img import Text2EarthPipeline

    def no_memory(self, *args, **kwargs):  # what torch's CPU allocator raises for an image that does not fit
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(Text2EarthPipeline, "__call__", no_memory)
    argv = ["generate", "fields", "--model", ws["model"], "--gsd", "10", "--steps", "1", "--n", "2"]
    assert main([*argv, "--height", "32", "--width", "32", "--out", str(tmp_path / "gen")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not enough memory to sample an image of 32x32" in err[0] and "64.0 GiB" in err[0]
    assert not (tmp_path / "gen").exists()


def test_a_pattern_that_matches_nothing_never_builds_the_embedded_tiles(tmp_path):
    from data_modules.embedded import ensure_embedded

    embedded = tmp_path / "data" / "embedded"
    ensure_embedded(embedded, [str(tmp_path / "typo" / "train-*.tar")], progress=False)
    assert not embedded.exists()  # the typo is the reader's error to report, not a reason to build


def test_resume_overrides_are_the_runs_own_then_the_new_ones(tmp_path):
    from text2earth.cli.train import resume_overrides

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- experiment=demo\n- trainer.max_steps=10\n- hydra.run.dir=/elsewhere\n- ckpt_path=last_or_none\n"
    )
    # what Lightning's relaunch of a DDP rank passes: the same command plus the run folder again
    relaunch = [f"resume={tmp_path}", "trainer.max_steps=20", f"hydra.run.dir={tmp_path}", "hydra.output_subdir=null"]
    assert resume_overrides(relaunch) == [
        "experiment=demo",
        "trainer.max_steps=10",
        "trainer.max_steps=20",
        "hydra.output_subdir=null",
        f"hydra.run.dir={tmp_path}",
        "ckpt_path=last",
    ]
    assert resume_overrides(["experiment=demo"]) == ["experiment=demo"]  # no resume=: unchanged
