"""The README's figures as files: ``python -m scripts.figures NAME SOURCE.json`` copies a make target's JSON
report to ``docs/figures/NAME.json``, where ``tests/test_readme_figures.py`` compares the README with it.

The make targets that measure something (eval-demo, demo-edit, demo-translate, enhance-demo) end with this
step, so a rerun of the target is all it takes to refresh a figure; the README must then be updated to match.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from text2earth.io.files import write_atomic

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="the figure file's name: docs/figures/NAME.json")
    parser.add_argument("source", help="the JSON report the make target wrote")
    args = parser.parse_args()
    report = json.loads(Path(args.source).read_text())
    # Paths inside the project are kept relative to it: the file must not name one checkout.
    root = FIGURES.parents[1]
    text = json.dumps(report, indent=2, sort_keys=True).replace(f"{root}/", "").replace(f'"{root}"', '"."')
    write_atomic(FIGURES / f"{args.name}.json", (text + "\n").encode())
    print(f"figures: {args.source} -> {FIGURES / args.name}.json")


if __name__ == "__main__":
    main()
