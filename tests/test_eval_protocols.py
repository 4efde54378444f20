"""Resumable generation, zero-shot OA with the real ResNet-18 class, the level estimator on real tiles,
the RSICD reader and `text2earth evaluate` end to end on an RSICD-format folder."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from text2earth.eval.generation import EvalPrompt, generate_images, prompts_for
from text2earth.io.images import read_png_text
from text2earth.models.components import build_from_preset
from text2earth.pipelines.text2img import Text2EarthPipeline


@pytest.fixture(scope="module")
def tiny_pipe():
    return Text2EarthPipeline.from_components(build_from_preset("tiny", seed=0))


def test_resumed_generation_keeps_written_images_and_writes_no_duplicates(tiny_pipe, tmp_path):
    prompts = prompts_for(["farmland", "a river", "clouds"], ["crop", "river", "cloud"], [13.7, 12.0, 0.0], 2, seed=3)
    assert [p.seed for p in prompts] == [3, 4, 5, 6, 7, 8]
    whole = generate_images(tiny_pipe, prompts, tmp_path / "whole", batch_size=4, num_inference_steps=2)
    # An interrupted run: only the first batch was written.
    part = tmp_path / "resumed"
    generate_images(tiny_pipe, prompts[:2], part, batch_size=2, num_inference_steps=2)
    first = {p.name: p.stat().st_mtime_ns for p in part.glob("*.png")}
    resumed = generate_images(tiny_pipe, prompts, part, batch_size=2, num_inference_steps=2)
    files = sorted(p.name for p in part.iterdir())
    assert files == sorted(f"{p.key}.png" for p in prompts)  # six PNGs, no temporary leftovers
    assert {n: (part / n).stat().st_mtime_ns for n in first} == first  # not regenerated
    for a, b in zip(whole, resumed, strict=True):
        assert (a.caption, a.level, a.label) == (b.caption, b.level, b.label)
        diff = np.abs(np.asarray(a.load(), np.int16) - np.asarray(b.load(), np.int16))
        assert diff.max() <= 1  # the same image whatever the batch it was made in


def test_generation_refuses_bad_keys(tiny_pipe, tmp_path):
    with pytest.raises(ValueError, match="unique"):
        generate_images(tiny_pipe, [EvalPrompt("a", "x", 0.0)] * 2, tmp_path)
    with pytest.raises(ValueError, match="plain file names"):
        generate_images(tiny_pipe, [EvalPrompt("../a", "x", 0.0)], tmp_path)


def _colour_tiles(colour, n, seed, size=32):
    rng = np.random.default_rng(seed)
    base = np.array(colour, np.float32)
    return [
        PIL.Image.fromarray(np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8))
        for _ in range(n)
    ]


def test_zero_shot_oa_end_to_end_with_resnet18(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    from text2earth.eval.zsoa import zero_shot_oa

    generated = _colour_tiles((200, 40, 40), 24, 0) + _colour_tiles((40, 40, 200), 24, 1)
    real = _colour_tiles((190, 50, 50), 10, 2) + _colour_tiles((50, 50, 190), 6, 3)
    real_labels = ["red"] * 10 + ["blue"] * 6
    result = zero_shot_oa(generated, ["red"] * 24 + ["blue"] * 24, real, real_labels, 32, epochs=3, lr=1e-3, seed=0)
    assert result["zero_shot_oa"] == 100.0
    assert result["init"] == "scratch" and result["classes"] == ["blue", "red"]
    assert result["settings"]["epochs"] == 3 and len(result["train_loss_per_epoch"]) == 3
    # A wrong classifier fails the same real set: the figure measures the generated images.
    swapped = zero_shot_oa(generated, ["blue"] * 24 + ["red"] * 24, real, real_labels, 32, epochs=3, lr=1e-3)
    assert swapped["zero_shot_oa"] == 0.0
    # Pretrained weights from a local folder (any ResNet checkpoint in the transformers layout).
    folder = tmp_path / "resnet"
    ResNetForImageClassification(
        ResNetConfig(num_labels=1000, hidden_sizes=[8, 8, 8, 8], embedding_size=8)
    ).save_pretrained(folder)
    loaded = zero_shot_oa(
        generated[:4], ["red"] * 2 + ["blue"] * 2, real[:2], real_labels[:2], 32, 1, pretrained=folder
    )
    assert loaded["init"] == f"pretrained:{folder}"


@pytest.mark.slow
def test_level_estimator_separates_real_tiles_of_different_gsd(embedded_shards):
    from text2earth.eval.datasets import read_shard_tiles
    from text2earth.eval.resolution_fidelity import estimate_levels, level_errors, train_level_estimator

    def sentinel(split, limit):
        tiles = read_shard_tiles(f"{embedded_shards}/{split}-*.tar")
        pick = {10.0: [], 80.0: []}
        for t in tiles:
            gsd = t.meta["gsd_m"]
            if t.meta["source"] == "sentinel2" and gsd in pick and len(pick[gsd]) < limit:
                pick[gsd].append(t)
        return pick[10.0] + pick[80.0]

    train, test = sentinel("train", 60), sentinel("val", 20)
    estimator = train_level_estimator(
        [t.image for t in train], [t.level for t in train], epochs=6, lr=3e-4, batch_size=16, seed=0
    )
    result = level_errors([t.level for t in test], estimate_levels(estimator, [t.image for t in test]))
    assert set(result["per_level"]) == {"10.678", "13.678"}
    assert result["acc_within_0.5"] >= 75.0  # chance is 50%: 10 m and 80 m are 3 levels apart
    assert result["mae_level"] < 1.0


def test_level_errors_per_level():
    from text2earth.eval.resolution_fidelity import level_errors

    result = level_errors([12.0, 12.0, 14.0], [12.4, 13.0, 14.0])
    assert result["mae_level"] == pytest.approx(1.4 / 3)
    assert result["acc_within_0.5"] == pytest.approx(200 / 3)
    assert result["per_level"]["12.000"]["acc_within_0.5"] == 50.0


@pytest.fixture
def rsicd_folder(tmp_path):
    """An RSICD-format folder: dataset_rsicd.json + RSICD_images/ (two classes, train and test splits)."""
    images = tmp_path / "RSICD_images"
    images.mkdir()
    entries = []
    colours = {"farmland": (60, 160, 60), "beach": (220, 200, 150)}
    for i in range(8):
        cls = "farmland" if i % 2 else "beach"
        name = f"{cls}_{i}.jpg"
        _colour_tiles(colours[cls], 1, i, size=48)[0].save(images / name)
        sentences = [{"raw": f"a {cls} scene number {i} "}, {"raw": f"an aerial view of a {cls}"}]
        entries.append({"filename": name, "split": "test" if i < 6 else "train", "sentences": sentences})
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps({"images": entries}))
    return tmp_path


def test_rsicd_reader(rsicd_folder):
    from text2earth.eval.datasets import read_rsicd
    from text2earth.io.rsicd import rsicd_scene_class

    items = read_rsicd(rsicd_folder / "dataset_rsicd.json")
    assert len(items) == 6
    assert items[1].label == "farmland" and items[1].captions == [
        "a farmland scene number 1",
        "an aerial view of a farmland",
    ]
    assert rsicd_scene_class("denseresidential_12.jpg") == "denseresidential" and rsicd_scene_class("00012.jpg") is None
    with pytest.raises(FileNotFoundError, match="dataset_rsicd.json"):
        read_rsicd(rsicd_folder / "missing.json")
    with pytest.raises(ValueError, match="split 'val'"):
        read_rsicd(rsicd_folder / "dataset_rsicd.json", split="val")


def test_evaluate_cli_on_rsicd_format(rsicd_folder, tmp_path, capsys):
    """`text2earth evaluate` end to end: tiny model, RSICD-format data, zero-shot OA; resumable; JSON report."""
    from text2earth.cli.main import main

    model = tmp_path / "model"
    Text2EarthPipeline.from_components(build_from_preset("tiny", seed=0)).save_pretrained(model)
    out = tmp_path / "eval"
    args = [
        "evaluate",
        "eval_data=rsicd",
        f"eval_data.json={rsicd_folder / 'dataset_rsicd.json'}",
        f"model_dir={model}",
        "metrics=[zsoa,clip]",
        "generation.images_per_caption=2",
        "generation.steps=2",
        "zsoa.image_size=32",
        "zsoa.epochs=1",
        "wandb.enabled=true",
        f"hydra.run.dir={out}",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "zero-shot OA" in printed and "skipped" in printed
    report = json.loads((out / "report.json").read_text())
    zsoa = report["metrics"]["zsoa"]
    assert zsoa["n_generated"] == 6 * 2 * 2 and zsoa["n_real"] == 6
    assert zsoa["init"] == "scratch" and zsoa["settings"]["seed"] == 0
    assert "clip" in report["skipped"]
    assert len(list((out / "generated").glob("*.png"))) == 24
    assert list((out / "wandb").glob("offline-run-*"))


def test_evaluate_cli_fails_clearly_without_rsicd(tmp_path, capsys):
    from text2earth.cli.main import main

    code = main(["evaluate", "eval_data=rsicd", "metrics=[fid]", f"hydra.run.dir={tmp_path}"])
    assert code == 2
    assert "dataset_rsicd.json" in capsys.readouterr().err


@pytest.mark.slow
def test_training_callback_logs_resolution_fidelity(embedded_shards, tmp_path):
    """The EvalMetrics callback inside a real (one-step) demo training run through Hydra."""
    from callbacks.eval_metrics import EvalMetrics
    from text2earth.core.config import compose_config
    from text2earth.training.run import train

    overrides = [
        "experiment=demo",
        "debug=fast",
        "model.components.vae_folder=null",
        f"data.train_shards={embedded_shards}/train-*.tar",
        f"data.val_shards={embedded_shards}/val-*.tar",
        "data.batch_size=4",
        "data.num_workers=0",
        "data.shuffle_buffer=16",
        "logger=csv",
        f"paths.root_dir={tmp_path}",
        "callbacks.samples=null",
        "callbacks.eval_metrics.every_n_steps=1",
        "callbacks.eval_metrics.metrics=[resolution]",
        "callbacks.eval_metrics.prompts=[farmland]",
        "callbacks.eval_metrics.images_per_prompt=1",
        "callbacks.eval_metrics.num_inference_steps=2",
        f"callbacks.eval_metrics.estimator_shards={embedded_shards}/train-*.tar",
        "callbacks.eval_metrics.estimator_every=25",
        "callbacks.eval_metrics.estimator_epochs=1",
    ]
    result = train(compose_config("train", overrides, output_dir=tmp_path / "run"))
    callback = next(cb for cb in result["trainer"].callbacks if isinstance(cb, EvalMetrics))
    assert set(callback.last) == {"eval/level_mae", "eval/level_acc_within_0.5"}
    assert 0.0 <= callback.last["eval/level_acc_within_0.5"] <= 100.0
    assert len(list((tmp_path / "run" / "eval" / "step_0000001").glob("*.png"))) == 4  # 1 prompt x 4 levels
    with pytest.raises(ValueError, match="real_shards"):
        EvalMetrics(["x"], [12.0], metrics=["fid"])


def test_resume_refuses_images_made_with_other_settings(tiny_pipe, tmp_path):
    prompts = prompts_for(["farmland"], ["crop"], [13.7], 1)
    generate_images(tiny_pipe, prompts, tmp_path, num_inference_steps=2)
    with pytest.raises(ValueError, match="steps differ"):
        generate_images(tiny_pipe, prompts, tmp_path, num_inference_steps=3)
    with pytest.raises(ValueError, match="level_guidance differ"):
        generate_images(tiny_pipe, prompts, tmp_path, num_inference_steps=2, level_guidance_scale=8.0)


def test_a_separate_level_guidance_changes_the_image_and_is_recorded(tiny_pipe, tmp_path):
    prompts = prompts_for(["farmland"], ["crop"], [13.7], 1)
    (one,) = generate_images(tiny_pipe, prompts, tmp_path / "one", num_inference_steps=2)
    (split,) = generate_images(tiny_pipe, prompts, tmp_path / "split", num_inference_steps=2, level_guidance_scale=9.0)
    assert read_png_text(split.path)["level_guidance"] == "9"
    assert "level_guidance" not in read_png_text(one.path)
    assert np.abs(np.asarray(one.load(), float) - np.asarray(split.load(), float)).max() > 0
    with pytest.raises(ValueError, match="level_guidance differ"):
        generate_images(tiny_pipe, prompts, tmp_path / "split", num_inference_steps=2)


def test_evaluate_checks_the_classifier_folder_before_generating(tmp_path, capsys):
    """A wrong zsoa.pretrained fails in seconds, before any image is generated or any FID computed."""
    from text2earth.cli.main import main

    argv = ["evaluate", "eval_preset=demo", "metrics=[fid,zsoa]", f"zsoa.pretrained={tmp_path / 'no-resnet'}"]
    assert main([*argv, f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-resnet" in err and "config.json" in err
    assert not list((tmp_path / "run").rglob("*.png"))
