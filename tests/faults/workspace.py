"""The inputs of the bad-input sweep, built once in a folder: tiny real models, real shards and images, and
damaged copies of each (truncated, garbage, unreadable, foreign, pointing at a shell command)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import PIL.Image

# A real read-only place, even for root (chmod is ignored there): the sysfs root refuses new entries.
READ_ONLY = "/sys/text2earth_fault_out"


def _png(path: Path, array: np.ndarray) -> Path:
    PIL.Image.fromarray(array).save(path)
    return path


def _shard(path: Path, n: int, start: int = 0) -> Path:
    """A webdataset shard of ``n`` real 32-px samples (png + txt + json), like `data convert` writes."""
    rng = np.random.default_rng(start)
    with tarfile.open(path, "w") as tar:
        for i in range(start, start + n):
            buffer = io.BytesIO()
            PIL.Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buffer, format="PNG")
            meta = {"gsd_m": 10.0, "level": 13.678, "lat": 45.0 + i, "lon": 7.0, "source": "faults"}
            for suffix, data in (
                ("png", buffer.getvalue()),
                ("txt", b"fields and a river"),
                ("json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(f"{i:06d}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _damaged_copies(model: Path, root: Path) -> dict[str, Path]:
    """Copies of a model folder with one part broken each."""
    out = {}
    unet = "unet/diffusion_pytorch_model.safetensors"
    for name, damage in {
        "truncated": lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]),
        "garbage": lambda f: f.write_bytes(b"\x00garbage" * 64),
        "empty": lambda f: f.write_bytes(b""),
    }.items():
        folder = root / f"model_{name}"
        shutil.copytree(model, folder)
        damage(folder / unet)
        out[f"model_{name}"] = folder
    folder = root / "model_badvae"
    shutil.copytree(model, folder)
    vae = folder / "vae/diffusion_pytorch_model.safetensors"
    vae.write_bytes(vae.read_bytes()[:1000])
    out["model_badvae"] = folder
    folder = root / "model_badconfig"
    shutil.copytree(model, folder)
    (folder / "unet/config.json").write_text("{not json")
    out["model_badconfig"] = folder
    folder = root / "model_badvalue"
    shutil.copytree(model, folder)
    config = json.loads((folder / "unet/config.json").read_text())
    config["block_out_channels"] = "wide"
    (folder / "unet/config.json").write_text(json.dumps(config))
    out["model_badvalue"] = folder
    folder = root / "model_noweights"
    shutil.copytree(model, folder)
    (folder / unet).unlink()
    (folder / unet).mkdir()  # a folder where the weights file should be: unreadable as a file
    out["model_noweights"] = folder
    folder = root / "model_badindex"
    shutil.copytree(model, folder)
    (folder / "model_index.json").write_text("[1, 2")
    out["model_badindex"] = folder
    return out


def build_workspace(root: str | Path) -> dict[str, str]:
    """Every input file the cases name, as ``{name: path}`` (the names the case table's ``{...}`` use)."""
    import torch

    from text2earth.models.components import build_from_preset
    from text2earth.models.inpainting import inpainting_unet_from
    from text2earth.pipelines.inpaint import Text2EarthInpaintPipeline
    from text2earth.pipelines.text2img import Text2EarthPipeline

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ws: dict[str, Path] = {"root": root}
    model = root / "model"
    Text2EarthPipeline.from_components(build_from_preset("tiny", seed=0)).save_pretrained(model)
    parts = build_from_preset("tiny", seed=0)
    parts.unet = inpainting_unet_from(parts.unet)
    inpaint = root / "inpaint"
    Text2EarthInpaintPipeline.from_components(parts).save_pretrained(inpaint)
    ws.update(model=model, inpaint=inpaint, **_damaged_copies(model, root))

    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    rgb = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    ws["rgb"] = _png(images / "rgb.png", rgb)
    ws["rgb_jpg"] = images / "rgb.jpg"
    PIL.Image.fromarray(rgb).save(ws["rgb_jpg"], quality=95)
    ws["mask"] = _png(images / "mask.png", mask)
    ws["mask_small"] = _png(images / "mask_small.png", mask[:16, :16])
    ws["gray"] = _png(images / "gray.png", rgb[..., 0])
    ws["gray_odd"] = _png(images / "gray_odd.png", rgb[:30, :30, 0])
    # 16-bit: a dim scene in the low thousands of DN, as sensors write them (8-bit decoding saturates it).
    dn16 = (rgb[..., 0].astype(np.uint16) * 16 + 1000).astype(np.uint16)
    ws["gray16"] = images / "gray16.png"
    PIL.Image.fromarray(dn16).save(ws["gray16"])
    ws["gray16_tif"] = images / "gray16.tif"
    PIL.Image.fromarray(dn16).save(ws["gray16_tif"])
    ws["rgb16"] = images / "rgb16.tif"
    try:  # PIL cannot write 3x16-bit; tifffile is optional
        import tifffile

        tifffile.imwrite(ws["rgb16"], (rgb.astype(np.uint16) * 257))
    except ImportError:
        ws["rgb16"] = ws["gray16_tif"]
    ws["garbage_png"] = images / "garbage.png"
    ws["garbage_png"].write_bytes(b"not an image at all" * 10)
    ws["empty_png"] = images / "empty.png"
    ws["empty_png"].write_bytes(b"")
    ws["truncated_png"] = images / "truncated.png"
    ws["truncated_png"].write_bytes(ws["rgb"].read_bytes()[:200])
    ws["text_file"] = root / "notes.txt"
    ws["text_file"].write_text("hello\n")
    ws["existing_dir"] = root / "existing_dir"
    ws["existing_dir"].mkdir()

    shards = root / "shards"
    shards.mkdir()
    _shard(shards / "train-000000.tar", 6, 0)
    _shard(shards / "train-000001.tar", 6, 6)
    ws["shards"] = shards
    damaged = root / "damaged"
    damaged.mkdir()
    whole = _shard(damaged / "whole.tar", 8, 0)
    ws["truncated_tar"] = damaged / "truncated-000000.tar"
    ws["truncated_tar"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    ws["mixed_list"] = damaged / "mixed.txt"
    ws["mixed_list"].write_text(f"{shards}/train-000000.tar\n{shards}/train-000001.tar\n{ws['truncated_tar']}\n")
    ws["not_a_tar"] = damaged / "garbage-000000.tar"
    ws["not_a_tar"].write_bytes(b"\x00" * 10 + b"not a tar" * 100)
    evil = root / "evil"
    evil.mkdir()
    marker = root / "PWNED"
    ws["pwned"] = marker
    ws["evil_manifest"] = evil / "manifest.json"
    ws["evil_manifest"].write_text(json.dumps({"shards": [f"pipe:touch {marker}; cat {shards}/train-000000.tar"]}))
    ws["evil_list"] = evil / "list.txt"
    ws["evil_list"].write_text(f"pipe:touch {marker}; cat {shards}/train-000000.tar\n")
    ws["evil_list_list"] = evil / "lists.txt"  # a list naming the list: the command is one level down
    ws["evil_list_list"].write_text("list.txt\n")
    ws["bad_manifest"] = evil / "broken" / "manifest.json"
    ws["bad_manifest"].parent.mkdir()
    ws["bad_manifest"].write_text("{broken")

    folder = root / "folder_src"
    folder.mkdir()
    _png(folder / "a.png", rgb)
    _png(folder / "b.png", rgb[::-1])
    _png(root / "outside.png", rgb)
    ws["folder_src"] = folder
    ws["captions"] = folder / "captions.csv"
    ws["captions"].write_text("image,caption,gsd_m\na.png,fields,10\nb.png,a river,10\n")
    ws["captions_escape"] = root / "captions_escape.csv"
    ws["captions_escape"].write_text(f"image,caption\n../outside.png,escaped\n{root / 'outside.png'},absolute\n")
    ws["captions_nocol"] = root / "captions_nocol.csv"
    ws["captions_nocol"].write_text("name,text\na.png,fields\n")
    ws["captions_binary"] = root / "captions_binary.csv"
    ws["captions_binary"].write_bytes(b"\xff\xfe\x00\x01garbage\x00" * 20)
    ws["captions_jsonl_bad"] = root / "captions_bad.jsonl"
    ws["captions_jsonl_bad"].write_text('{"image": "a.png", "caption": "x"}\n{broken\n')
    ws["rsicd_bad"] = root / "rsicd_bad.json"
    ws["rsicd_bad"].write_text('{"images": 3}')

    ckpts = root / "ckpts"
    ckpts.mkdir()
    ws["ckpts"] = ckpts
    ws["ckpt_foreign"] = ckpts / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, ws["ckpt_foreign"])
    ws["ckpt_truncated"] = ckpts / "truncated.ckpt"
    big = ckpts / "big.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4096)}, "hyper_parameters": {}}, big)
    ws["ckpt_truncated"].write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    big.unlink()
    ws["ckpt_text"] = ckpts / "text.ckpt"
    ws["ckpt_text"].write_text("not a checkpoint")
    ws["empty_run"] = root / "empty_run"
    ws["empty_run"].mkdir()
    ws["rrdb"] = Path(__file__).resolve().parents[2] / "weights" / "enhance" / "rrdbnet_x2_small.safetensors"
    ws["translator"] = Path(__file__).resolve().parents[2] / "weights" / "translate" / "pan2rgb"
    ws["read_only"] = Path(READ_ONLY)
    return {k: str(v) for k, v in ws.items()}
