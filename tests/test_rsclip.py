"""Git-RSCLIP / SigLIP / CLIP: loading, published preprocessing, zero-shot, retrieval, the sigmoid loss across
ranks, training through Hydra, export -> from_pretrained, and the CLI's bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import CLIPModel, SiglipConfig, SiglipModel

from text2earth.cli.main import main as cli_main
from text2earth.eval.retrieval import recall_at_k
from text2earth.eval.zero_shot import accuracy_report, read_class_folders
from text2earth.models.contrastive import sigmoid_loss
from text2earth.models.rsclip import load_image_text_model, save_image_text_folder
from text2earth.models.tokenizer import load_clip_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def tiny_siglip(seed: int = 0) -> SiglipModel:
    # transformers' SigLIP tokenizer needs sentencepiece (not installed): the tiny folder pairs a SiglipModel with
    # the bundled CLIP BPE tokenizer (its 49408-token vocabulary); the published folders ship their own tokenizer.
    torch.manual_seed(seed)
    config = SiglipConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
    )
    model = SiglipModel(config)
    with torch.no_grad():  # away from the init values, so a loader that ignored them would be caught
        model.logit_scale.fill_(2.5)
        model.logit_bias.fill_(-3.0)
    return model


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory) -> Path:
    return save_image_text_folder(tiny_siglip(), load_clip_tokenizer(), tmp_path_factory.mktemp("m") / "siglip")


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory) -> Path:
    """Three classes of real-looking images (solid colours with noise), one empty class, one corrupt file."""
    root = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    colours = {"dense_forest": (20, 90, 30), "open_water": (20, 40, 120), "bare_soil": (150, 110, 70)}
    for name, colour in colours.items():
        (root / name).mkdir()
        for i in range(3):
            pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
            PIL.Image.fromarray(pixels).save(root / name / f"{i}.png")
    (root / "empty_class").mkdir()
    (root / "open_water" / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def test_zero_shot_logits_and_probabilities_match_siglip_forward(siglip_folder):
    loaded = load_image_text_model(siglip_folder)
    assert loaded.kind == "siglip" and loaded.text_length == 64
    rng = np.random.default_rng(1)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)) for _ in range(3)]
    texts = ["a dense green forest canopy", "open water", "a patchwork of farmland fields"]
    # Published preprocessing: square bicubic resize to the model's size, /255, mean/std 0.5; 64 tokens.
    pixels = loaded.preprocess(images)
    expected = np.stack([np.asarray(im.resize((32, 32), PIL.Image.Resampling.BICUBIC)) for im in images]) / 255.0
    torch.testing.assert_close(
        pixels, torch.from_numpy((expected - 0.5) / 0.5).permute(0, 3, 1, 2).float(), atol=2e-2, rtol=0
    )
    tokens = loaded.tokenize(texts)
    assert tokens["input_ids"].shape == (3, 64) and "attention_mask" not in tokens
    reference = SiglipModel.from_pretrained(siglip_folder).eval()
    with torch.no_grad():
        out = reference(input_ids=tokens["input_ids"], pixel_values=pixels)
    logits = loaded.logits(loaded.embed_images(images), loaded.embed_texts(texts))
    torch.testing.assert_close(logits, out.logits_per_image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(loaded.probabilities(logits), torch.sigmoid(out.logits_per_image), atol=1e-5, rtol=1e-4)


def test_recall_against_a_hand_computed_case():
    # 3 images, 2 captions each (texts 0,1 -> image 0; 2,3 -> image 1; 4,5 -> image 2).
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.8, 0.0, 0.0, 0.0],  # image 0: best text is its own -> i2t rank 0
            [0.5, 0.3, 0.1, 0.2, 0.0, 0.0],  # image 1: its best text (0.2) ranks 3rd -> rank 2
            [0.0, 0.7, 0.0, 0.0, 0.3, 0.6],  # image 2: text 1 first, its text 5 second -> rank 1
        ]
    )
    r = recall_at_k(sim, [0, 0, 1, 1, 2, 2], ks=(1, 2))
    assert r["i2t_R@1"] == pytest.approx(100 / 3) and r["i2t_R@2"] == pytest.approx(200 / 3)
    # Text -> image ranks (owner's place in its column): t0 0; t1 2 (0.7, 0.3 before its 0.1); t2 1; t3 0; t4 0;
    # t5 0. R@1 = 4/6, R@2 = 5/6.
    assert r["t2i_R@1"] == pytest.approx(400 / 6) and r["t2i_R@2"] == pytest.approx(500 / 6)
    assert r["mean_recall"] == pytest.approx((100 / 3 + 200 / 3 + 400 / 6 + 500 / 6) / 4)


def test_accuracy_report_top5_confusion_and_floors():
    logits = torch.tensor([[3.0, 1, 0], [0.0, 2, 1], [0.0, 2, 1], [1.0, 0, 2]])
    report = accuracy_report(logits, torch.tensor([0, 1, 2, 2]), ["a", "b", "c"])
    assert report["top1"] == 0.75 and report["top5"] == 1.0
    assert report["confusion"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert report["majority_top1"] == 0.5 and report["per_class_top1"]["c"] == 0.5


LOSS_SCRIPT = """
import sys, torch, torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
from text2earth.models.contrastive import sigmoid_loss
data = torch.load(sys.argv[1], weights_only=True)
n = data["images"].shape[0] // world
images = data["images"][rank * n:(rank + 1) * n].clone().requires_grad_(True)
texts = data["texts"][rank * n:(rank + 1) * n].clone().requires_grad_(True)
scale, bias = data["scale"].clone().requires_grad_(True), data["bias"].clone().requires_grad_(True)
loss = sigmoid_loss(images, texts, scale, bias)
loss.backward()
# What DDP does with replicated parameters: average the gradients over ranks.
mean_loss = loss.detach().clone()
dist.all_reduce(mean_loss)
for g in (scale.grad, bias.grad):
    dist.all_reduce(g)
torch.save({"loss": mean_loss / world, "images": images.grad, "texts": texts.grad,
            "scale": scale.grad / world, "bias": bias.grad / world}, f"{sys.argv[2]}/rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
"""


def test_sigmoid_loss_is_the_same_on_two_ranks_as_on_one(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    texts = torch.nn.functional.normalize(images + 0.5 * torch.randn(8, 16, generator=g), dim=-1)
    scale, bias = torch.tensor([2.3]), torch.tensor([-5.0])
    torch.save({"images": images, "texts": texts, "scale": scale, "bias": bias}, tmp_path / "batch.pt")
    script = tmp_path / "rank.py"
    script.write_text(LOSS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run(
        [*command, str(tmp_path / "batch.pt"), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # One rank, the whole global batch.
    leaves = [t.clone().requires_grad_(True) for t in (images, texts, scale, bias)]
    loss = sigmoid_loss(*leaves, cross_rank=False)
    loss.backward()
    torch.testing.assert_close(ranks[0]["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    # A rank's embedding gradient holds every rank's loss (the gather's backward sums them); DDP's mean over
    # 2 ranks then gives the one-rank gradient of the global loss.
    for key, leaf in (("images", leaves[0]), ("texts", leaves[1])):
        torch.testing.assert_close(torch.cat([r[key] for r in ranks]) / 2, leaf.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ranks[0]["scale"], leaves[2].grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ranks[0]["bias"], leaves[3].grad, rtol=1e-4, atol=1e-6)
    # Without cross-rank negatives the two halves would give a different loss: the test can tell them apart.
    halves = [sigmoid_loss(images[i : i + 4], texts[i : i + 4], scale, bias, cross_rank=False) for i in (0, 4)]
    assert not torch.allclose(sum(halves) / 2, loss.detach(), atol=1e-3)


def test_tiny_preset_export_loads_in_plain_transformers(tmp_path):
    from text2earth.training.rsclip_module import RsclipModule

    module = RsclipModule(optimizer={"_target_": "torch.optim.AdamW", "lr": 1e-3})
    assert (
        float(module.model.logit_scale.detach()) == pytest.approx(np.log(10))
        and float(module.logit_bias.detach()) == -10.0
    )
    with torch.no_grad():
        module.logit_bias.fill_(-7.5)
    folder = module.export(tmp_path / "rsclip")
    plain = CLIPModel.from_pretrained(folder).eval()
    for a, b in zip(plain.state_dict().values(), module.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    loaded = load_image_text_model(folder)
    assert loaded.logit_bias_value == -7.5 and loaded.text_length == 77
    # The text tower is the tiny text-to-image preset's text encoder configuration (a drop-in replacement).
    from text2earth.models.presets import get_preset

    for key, value in get_preset("tiny")["text_encoder"].items():
        assert getattr(plain.config.text_config, key) == value
    # ... and the demo's components take it (make demo-train DEMO_TEXT_ENCODER=...).
    from text2earth.models.components import ModelFolderError, build_components

    tower = build_components(preset="tiny", text_encoder_folder=str(folder)).text_encoder
    for name, value in tower.named_parameters():
        torch.testing.assert_close(value, plain.text_model.get_parameter(name))
    with pytest.raises(ModelFolderError, match="no config.json"):
        build_components(preset="tiny", text_encoder_folder=str(tmp_path))


def test_finetune_a_siglip_folder_through_hydra_and_export(siglip_folder, embedded_small, tmp_path):
    from text2earth.core.config import compose_config
    from text2earth.training.run import train

    overrides = [
        "experiment=rsclip_demo",
        "debug=fast",
        f"data.train_shards={embedded_small}/train-*.tar",
        f"data.val_shards={embedded_small}/val-*.tar",
        "data.build_embedded_if_missing=null",
        "data.batch_size=8",
        "data.num_workers=0",
        "data.shuffle_buffer=16",
        "logger=csv",
        "model.preset=null",
        f"model.folder={siglip_folder}",
        "model.gradient_checkpointing=true",
        "model.lr_scheduler=null",  # the warm-up's first step has lr 0
        f"paths.root_dir={tmp_path}",
    ]
    result = train(compose_config("train", overrides, output_dir=tmp_path / "run"))
    assert result["global_step"] == 1 and np.isfinite(result["metrics"]["train/loss"])
    exported = tmp_path / "run" / "model"
    before, after = SiglipModel.from_pretrained(siglip_folder), SiglipModel.from_pretrained(exported)
    assert float(after.logit_bias) == pytest.approx(-3.0, abs=0.01)  # the folder's own bias, not SigLIP's init
    changed = [
        not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True)
    ]
    assert any(changed)  # one optimiser step moved the weights
    assert load_image_text_model(exported).kind == "siglip"


def test_classify_cli_writes_report_and_confusion_png(siglip_folder, scene_folder, tmp_path, capsys):
    out = tmp_path / "zs"
    code = cli_main(["clip", "classify", str(scene_folder), "--model", str(siglip_folder), "--out", str(out)])
    assert code == 0
    report = json.loads((out / "zero_shot.json").read_text())
    assert report["n_images"] == 9 and report["skipped"] == 1 and report["empty_classes"] == ["empty_class"]
    assert report["classes"] == ["bare_soil", "dense_forest", "empty_class", "open_water"]
    assert report["prompts"]["dense_forest"] == ["a remote sensing image of dense forest."]
    assert 0.0 <= report["top1"] <= report["top5"] == 1.0  # 4 classes: top-5 holds every class
    assert sum(map(sum, report["confusion"])) == 9
    png = PIL.Image.open(out / "confusion.png")
    assert png.size[0] > 4 * 28
    assert "top-1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_model", "does not exist"),
        ("no_config", "no config.json"),
        ("one_class", "class subfolder"),
        ("no_images", "no image files"),
        ("bad_template", "needs a '{}'"),
    ],
)
def test_cli_bad_inputs_one_line(case, message, siglip_folder, scene_folder, tmp_path, capsys):
    model, dataset, extra = str(siglip_folder), str(scene_folder), []
    if case == "missing_model":
        model = str(tmp_path / "nothing")
    elif case == "no_config":
        (tmp_path / "empty").mkdir()
        model = str(tmp_path / "empty")
    elif case == "one_class":
        (tmp_path / "ds" / "only").mkdir(parents=True)
        dataset = str(tmp_path / "ds")
    elif case == "no_images":
        for name in ("a", "b"):
            (tmp_path / "ds" / name).mkdir(parents=True)
        dataset = str(tmp_path / "ds")
    elif case == "bad_template":
        extra = ["--template", "no placeholder"]
    code = cli_main(["clip", "classify", dataset, "--model", model, "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_retrieve_cli_on_a_karpathy_file_skips_unreadable(siglip_folder, tmp_path, capsys):
    images = tmp_path / "RSICD_images"
    images.mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i in range(4):
        PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"farmland_{i}.jpg")
        entries.append(
            {
                "filename": f"farmland_{i}.jpg",
                "split": "test",
                "sentences": [{"raw": f"field {i} {j}"} for j in range(5)],
            }
        )
    (images / "farmland_4.jpg").write_bytes(b"corrupt")
    entries.append({"filename": "farmland_4.jpg", "split": "test", "sentences": [{"raw": "x"}] * 5})
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps({"images": entries}))
    out = tmp_path / "r.json"
    code = cli_main(
        ["clip", "retrieve", str(tmp_path / "dataset_rsicd.json"), "--model", str(siglip_folder), "--out", str(out)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["n_images"] == 4 and report["n_texts"] == 20 and report["skipped_images"] == 1
    assert report["i2t_R@10"] == 100.0 and report["t2i_R@5"] == 100.0  # 4 images: always within 5
    assert "mean recall" in capsys.readouterr().out
    assert cli_main(["clip", "retrieve", str(tmp_path / "nope.json"), "--model", str(siglip_folder)]) == 2


def test_read_class_folders_limits_and_orders(scene_folder):
    dataset = read_class_folders(scene_folder, limit_per_class=2)
    assert [c for _, c in dataset.items] == [0, 0, 1, 1, 3, 3]


def test_shipped_tiny_model_names_held_out_tiles_well_above_the_floors(embedded_small, tmp_path):
    from data_modules.embedded.captions import CLASSES
    from scripts.rsclip_embedded import evaluate, table
    from text2earth.core.paths import shipped

    report = evaluate(shipped("rsclip_tiny"), f"{embedded_small}/val-*.tar", tmp_path)
    counts = [sum(row) for row in report["confusion"]]
    assert set(report["classes"]) <= set(CLASSES) and sum(counts) == report["n_images"] > 50
    assert report["majority_top1"] == pytest.approx(max(counts) / sum(counts))
    assert report["chance_top1"] == pytest.approx(1 / len(report["classes"]))
    # The shipped model: 90.4 % on all 637 held-out tiles (README); every 8th tile here.
    assert report["top1"] > max(0.75, report["majority_top1"] + 0.3)
    assert (tmp_path / "confusion.png").is_file() and "chance" in table(report)


def test_rsclip_finetune_composes_at_published_scale(tmp_path):
    from omegaconf import OmegaConf

    from text2earth.core.config import compose_config

    cfg = compose_config(
        "train", ["experiment=rsclip_finetune", "model.folder=/models/Git-RSCLIP"], output_dir=tmp_path
    )
    assert cfg.model._target_.endswith("RsclipModule") and cfg.model.preset is None
    assert cfg.model.gradient_checkpointing and cfg.model.cross_rank_negatives
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.strategy._target_.endswith("DDPStrategy")
    assert cfg.data.image_size == 256 and cfg.data._target_.endswith("ShardDataModule")
    OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)
