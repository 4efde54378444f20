"""Every README figure tagged ``<!-- figure FILE:PATH -->`` equals the value in ``docs/figures/FILE.json``
(written by the make target that measures it, see ``scripts/figures.py``), within the stated tolerance."""

import json
from pathlib import Path

import pytest
from readme import readme_figures

ROOT = Path(__file__).resolve().parents[1]


def _lookup(data, path: str):
    for key in path.split("/"):
        data = data[int(key)] if isinstance(data, list) else data[key]
    return data


def test_readme_figures_come_from_the_figure_files():
    figures = readme_figures(ROOT / "README.md")
    assert len(figures) >= 10
    wrong = []
    for fig in figures:
        source = ROOT / "docs" / "figures" / f"{fig.file}.json"
        assert source.is_file(), f"README line {fig.line}: {source} does not exist"
        value = float(_lookup(json.loads(source.read_text()), fig.path)) * fig.scale
        if abs(value - fig.value) > fig.allowed:
            wrong.append(f"README line {fig.line}: shows {fig.shown}, {fig.file}.json {fig.path} is {value:.6g}")
    assert not wrong, "\n".join(wrong)


def test_a_wrong_figure_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("| FID | 259.1<!-- figure eval_demo:metrics/fid/fid --> | 42 %<!-- figure x:y ±2% --> |\n")
    first, second = readme_figures(readme)
    assert (first.value, first.file, first.path, first.allowed) == (
        259.1,
        "eval_demo",
        "metrics/fid/fid",
        pytest.approx(0.05),
    )
    assert (second.value, second.allowed) == (42, pytest.approx(0.84))
