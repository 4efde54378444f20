"""Copy an exported translator or LoRA folder to where it ships, re-pointing its relative ``base_model``.

``python -m scripts.ship_variant SRC DST``: the export records its base model relative to its own folder
(``translate.json`` / ``lora.json``), so a plain copy elsewhere would point at the wrong place.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from text2earth.io.files import atomic_directory

INFO_FILES = ("translate.json", "lora.json")


def ship(src: str | Path, dst: str | Path) -> Path:
    src, dst = Path(src), Path(dst)
    with atomic_directory(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        for name in INFO_FILES:
            if not (tmp / name).is_file():
                continue
            info = json.loads((tmp / name).read_text())
            base = info.get("base_model")
            if base and not Path(base).is_absolute():
                info["base_model"] = os.path.relpath((src / base).resolve(), dst.resolve())
                (tmp / name).write_text(json.dumps(info, indent=2) + "\n")
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("src", help="the exported folder (export_dir of the training run)")
    parser.add_argument("dst", help="where it ships, e.g. weights/translate/pan2rgb")
    args = parser.parse_args()
    print(f"shipped {args.src} -> {ship(args.src, args.dst)}")


if __name__ == "__main__":
    main()
