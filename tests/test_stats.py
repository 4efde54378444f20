"""``text2earth data stats`` on shards written here with known metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import webdataset as wds
from damaged import damaged_copy, drop_recorded_counts

from data_modules.stats import BACKGROUND, LAND, dataset_stats
from text2earth.cli.main import main


def test_stats_numbers_and_pictures(tmp_path):
    rows = [
        {"lat": 51.5, "lon": -0.1, "level": 17, "quality": 4.9, "source": "git10m"},
        {"lat": 51.6, "lon": -0.2, "level": 17, "quality": 4.2, "source": "git10m"},
        {"lat": -33.9, "lon": 151.2, "level": 15, "quality": 3.0, "source": "rsicd"},
        {"lat": None, "lon": None, "level": 0, "source": "rsicd"},
    ]
    with wds.TarWriter(str(tmp_path / "train-000000.tar")) as sink:
        for i, meta in enumerate(rows):
            sink.write(
                {
                    "__key__": f"s{i}",
                    "png": b"never decoded",
                    "txt": " ".join(["w"] * (3 + i)),
                    "json": json.dumps(meta),
                }
            )
        sink.write({"__key__": "bad", "txt": "x", "json": b'{"level": 99}'})  # out of range: counted skip
    out = tmp_path / "stats"
    summary = dataset_stats(f"{tmp_path}/train-*.tar", out, cell_degrees=2)
    assert summary["samples"] == 4 and summary["skipped"] == 1 and summary["located"] == 3
    assert summary["level"] == {"0": 1, "15": 1, "17": 2}
    assert summary["source"] == {"git10m": 2, "rsicd": 2}
    assert summary["quality"]["n"] == 3 and summary["quality"]["max"] == 4.9
    assert summary["caption_words"]["min"] == 3 and summary["caption_words"]["max"] == 6
    assert json.loads((out / "stats.json").read_text()) == summary

    world = np.asarray(PIL.Image.open(out / "world_density.png").convert("RGB"))

    # the world panel: 4 px per degree after a 56 px left and 30 px top margin; look at the centre of
    # the 2-degree cell holding (lat, lon)
    def pixel(lat, lon):
        lat_c, lon_c = np.floor(lat / 2) * 2 + 1, np.floor(lon / 2) * 2 + 1
        return tuple(int(v) for v in world[30 + round((90 - lat_c) * 4), 56 + round((lon_c + 180) * 4)])

    assert pixel(51.5, -0.1) != BACKGROUND and pixel(-33.9, 151.2) != BACKGROUND
    assert pixel(51.5, -0.1) != LAND and pixel(-33.9, 151.2) != LAND  # counts drawn over the land
    assert pixel(0.0, 60.0) == BACKGROUND and pixel(0.0, -150.0) == BACKGROUND  # open ocean, no samples
    assert pixel(23.0, 10.0) == LAND and pixel(-25.0, 135.0) == LAND  # Sahara, central Australia
    assert PIL.Image.open(out / "histograms.png").size == (1040, 600)


def test_stats_cli(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "none-*.tar"), "--out", str(tmp_path / "o")]) == 2
    assert "no shards match" in capsys.readouterr().err


def test_stats_cli_counts_what_a_truncated_shard_lost(embedded_small, tmp_path, capsys):
    """A shard cut to half its size: the samples after the damage are counted from the manifest's shard_samples;
    with a manifest from before that key, the damage counts one, said as "at least"."""
    folder, recorded = damaged_copy(Path(embedded_small), tmp_path / "d", lambda b: len(b) // 2)
    whole = sum(recorded.values())
    assert main(["data", "stats", f"{folder}/val-*.tar", "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "stats.json").read_text())
    lost = whole - summary["samples"]
    assert recorded["val-000000.tar"] // 4 < lost < recorded["val-000000.tar"] and summary["skipped"] == 0
    assert (summary["damaged_shards"], summary["lost_samples"], summary["lost_exact"]) == (1, lost, True)
    assert f"1 damaged shards read up to the damage, {lost} samples lost)" in capsys.readouterr().out

    drop_recorded_counts(folder)
    assert main(["data", "stats", f"{folder}/val-*.tar", "--out", str(tmp_path / "old")]) == 0
    old = json.loads((tmp_path / "old" / "stats.json").read_text())
    assert old["samples"] == summary["samples"] and (old["lost_samples"], old["lost_exact"]) == (1, False)
    assert "1 damaged shards read up to the damage, at least 1 sample lost)" in capsys.readouterr().out
