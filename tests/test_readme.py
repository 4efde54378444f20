"""The README is a contract: every shell and Python block runs as written in a fresh copy of the repository.

Blocks marked ``readme-test: skip REASON`` are reported with their reason; blocks marked
``readme-test: stand-in NAME`` run with the paths that NAME names replaced by stand-ins built here
(``tests/readme.py`` has the marker rules). The blocks run in README order in one copy, so a block may use
what an earlier one wrote, as a reader following the README would.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from readme import readme_blocks

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK_TIMEOUT_S = 900


def _real_tile(size: int = 64, index: int = 0) -> Image.Image:
    """A real 64-px Sentinel-2 / Landsat tile, cut from the shipped per-level preview picture."""
    preview = Image.open(ROOT / "docs" / "images" / "embedded_preview.png").convert("RGB")
    # The preview is a grid of tiles with a label column; any window of real pixels will do.
    x0 = preview.width // 2 - size + index * size // 2
    return preview.crop((x0, preview.height // 2 - size // 2, x0 + size, preview.height // 2 + size // 2))


def _published_model(copy: Path, standins: Path) -> dict[str, str]:
    """``/models/Text2Earth`` = the shipped tiny demo model, which is a folder in the published layout."""
    return {"/models/Text2Earth": str(copy / "weights" / "demo")}


def _inpainting_model(copy: Path, standins: Path) -> dict[str, str]:
    """``/models/Text2Earth-inpainting`` = the demo model with its UNet made 9-channel; ``tile.png`` = a real
    tile, ``mask.png`` = its centre square."""
    from text2earth.models.components import load_from_folder, save_folder
    from text2earth.models.inpainting import inpainting_unet_from

    parts = load_from_folder(copy / "weights" / "demo")
    parts.unet = inpainting_unet_from(parts.unet)
    folder = save_folder(parts, standins / "Text2Earth-inpainting")
    _real_tile().save(copy / "tile.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    Image.fromarray(mask).save(copy / "mask.png")
    return {"/models/Text2Earth-inpainting": str(folder)}


def _git10m(copy: Path, standins: Path) -> dict[str, str]:
    """``/data/Git-10M`` = one Parquet file of 8 rows in the Git-10M schema (real tiles as JPEG)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i in range(8):
        buffer = io.BytesIO()
        _real_tile(index=i).save(buffer, format="JPEG", quality=90)
        level = 12 + i % 4
        rows.append(
            {
                "image": {"bytes": buffer.getvalue(), "path": f"img_{i}.jpg"},
                "img_name": f"img_{i}.jpg",
                "img_quality_score": 4.5 + i / 20,
                "caption": f"farmland fields and a river, tile {i}",
                "caption_length": 7,
                "resolution": level,
                "Google_location": f"{level}_{100 + i}_{200 + i}",
            }
        )
    folder = standins / "Git-10M"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    return {"/data/Git-10M": str(folder)}


def _band_files(copy: Path, standins: Path) -> dict[str, str]:
    """``pan.tif``, ``pan.png`` and ``pan16.png`` = a 16-bit single band made from a real tile's brightness."""
    grey = np.asarray(_real_tile().convert("L"), dtype=np.uint16) * 257
    for name in ("pan.tif", "pan.png", "pan16.png"):
        Image.fromarray(grey).save(copy / name)
    return {}


STANDINS: dict[str, Callable[[Path, Path], dict[str, str]]] = {
    "published-model": _published_model,
    "inpainting-model": _inpainting_model,
    "git10m": _git10m,
    "band-files": _band_files,
}


def _substitute(code: str, table: dict[str, str]) -> str:
    for old, new in sorted(table.items(), key=lambda kv: -len(kv[0])):
        pattern = re.escape(old) + r"(?![\w-])"  # /models/Text2Earth must not match /models/Text2Earth-inpainting
        assert re.search(pattern, code), f"the stand-in replaces {old}, which the block does not use"
        code = re.sub(pattern, new, code)
    return code


def _fresh_copy(dest: Path) -> Path:
    """The repository's tracked files (as they are in the working tree), copied to ``dest``."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _environment(copy: Path, bin_dir: Path) -> dict[str, str]:
    """The venv running this test, with a ``text2earth`` console script that imports the copy."""
    bin_dir.mkdir()
    shim = bin_dir / "text2earth"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m text2earth.cli.main "$@"\n')
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "TEXT2EARTH"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(copy),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="offline",
    )
    return env


def test_readme_markers_are_well_formed():
    blocks = readme_blocks(README)
    assert blocks
    for block in blocks:
        if block.mode == "stand-in":
            assert block.standin in STANDINS, f"README line {block.line}: unknown stand-in {block.standin!r}"
        if block.mode in ("run", "stand-in"):
            # Placeholders are not commands: <run>, DIR, [--optional] cannot run as written.
            assert not re.search(r"<\w+>|\s\[--", block.code), f"README line {block.line}: a placeholder"


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path):
    copy = _fresh_copy(tmp_path / "repo")
    standins = tmp_path / "standins"
    standins.mkdir()
    env = _environment(copy, tmp_path / "bin")
    ran, substituted, skipped, failures = [], [], [], []
    built: dict[str, dict[str, str]] = {}  # each stand-in is built once, on first use
    for n, block in enumerate(readme_blocks(README)):
        if block.mode == "listing":
            continue
        if block.mode == "skip":
            skipped.append(f"line {block.line}: {block.note}")
            continue
        code = block.code
        if block.mode == "stand-in":
            if block.standin not in built:
                built[block.standin] = STANDINS[block.standin](copy, standins)
            code = _substitute(code, built[block.standin])
        if block.lang == "python":
            script = tmp_path / f"block_{n}.py"
            script.write_text(code)
            argv = [sys.executable, str(script)]
        else:
            argv = ["bash", "-euo", "pipefail", "-c", code]
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
            code, output = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:  # report it and go on: one run shows every failing block
            code, output = "timeout", f"{exc.stdout or ''}{exc.stderr or ''}"
        seconds = time.perf_counter() - start
        (substituted if block.mode == "stand-in" else ran).append(f"line {block.line} ({seconds:.0f} s)")
        if code:
            failures.append(f"README line {block.line} exit {code}:\n{output[-3000:]}")
    summary = {"ran": ran, "ran with stand-ins": substituted, "skipped": skipped}
    print(json.dumps(summary, indent=1))
    assert not failures, "\n\n".join(failures)
    # The README repository writes nothing outside outputs/, data/ and logs/ (all gitignored).
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tracked = set(listed.split())
    stray = sorted(
        p.relative_to(copy).as_posix()
        for p in copy.rglob("*")
        if p.is_file()
        and p.relative_to(copy).parts[0] not in ("outputs", "data", "logs")
        and p.relative_to(copy).as_posix() not in tracked
        and p.name not in ("tile.png", "mask.png", "pan.tif", "pan.png", "pan16.png")
        and "__pycache__" not in p.parts
    )
    assert not stray, f"README commands wrote outside outputs/: {stray[:10]}"
