"""``text2earth data convert`` on source files written here in their real layouts (pyarrow, JSON, CSV)."""

from __future__ import annotations

import io
import json
import math
from itertools import islice
from pathlib import Path

import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_modules.convert import convert
from data_modules.convert_sources import FolderSource, Git10mSource, RsicdSource, web_mercator_nw_corner
from data_modules.webdataset_datamodule import ShardDataModule
from text2earth.cli.main import main
from text2earth.io.shards import read_shard_samples

NON_ASCII = "Küstenlinie: a harbour — 港口 with boats"


@pytest.fixture(scope="module")
def tiles(embedded_small) -> list[bytes]:
    """Real 64-px tiles: 12 as JPEG, the rest as the original PNG bytes."""
    pngs = [s["png"] for s in islice(read_shard_samples(Path(embedded_small) / "val-000000.tar"), 24)]
    out = []
    for i, data in enumerate(pngs):
        if i < 12:
            buffer = io.BytesIO()
            PIL.Image.open(io.BytesIO(data)).convert("RGB").save(buffer, format="JPEG", quality=90)
            data = buffer.getvalue()
        out.append(data)
    return out


def _read(out: Path) -> dict[str, dict]:
    samples = {}
    for shard in sorted(out.glob("train-*.tar")):
        for s in read_shard_samples(shard):
            samples[s["__key__"]] = s
    return samples


def _git10m_rows(tiles: list[bytes]) -> list[dict]:
    rows = []
    for i in range(10):
        rows.append(
            {
                "image": {"bytes": tiles[i], "path": f"img_{i}.jpg"},
                "img_name": f"img_{i}.jpg",
                "img_quality_score": 4.0 + i / 10,
                "caption": f"farmland number {i} with a river",
                "caption_length": 6,
                "resolution": 10 + i % 9,
                "Google_location": f"{10 + i % 9}_{100 + i}_{200 + i}",
            }
        )
    rows[3].update(resolution=0, Google_location="")  # level 0 = unknown, no location
    rows[4].update(caption=NON_ASCII)
    rows[5]["image"] = {"bytes": tiles[5][: len(tiles[5]) // 2], "path": None}  # corrupt (truncated) JPEG
    rows[6]["caption"] = None
    rows[7]["Google_location"] = "17_x_3"
    rows[8].update(resolution=1, Google_location="1_1_1")  # NW corner of tile 1/1/1 is (0, 0)
    return rows


def test_web_mercator_corners():
    assert web_mercator_nw_corner(0, 0, 0) == pytest.approx((85.0511287798, -180.0))
    assert web_mercator_nw_corner(1, 1, 1) == pytest.approx((0.0, 0.0), abs=1e-12)
    lat, lon = web_mercator_nw_corner(10, 511, 340)  # London
    assert (lat, lon) == pytest.approx((51.6180165, -0.3515625))


def test_git10m_parquet_current_schema(tiles, tmp_path):
    rows = _git10m_rows(tiles)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet", row_group_size=3)
    out = tmp_path / "out"
    manifest = convert(
        Git10mSource(str(tmp_path / "part-0.parquet")),
        out,
        shard_count=2,
        rows_per_task=4,
        workers=2,
        progress=False,
    )
    assert manifest["rows"] == 10 and manifest["samples"] == 7
    assert manifest["skipped"] == {"bad_metadata": 1, "missing_caption": 1, "undecodable_image": 1}
    report = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert sorted((r["row"], r["reason"], r["id"]) for r in report) == [
        (5, "undecodable_image", "img_5.jpg"),
        (6, "missing_caption", "img_6.jpg"),
        (7, "bad_metadata", "img_7.jpg"),
    ]
    assert manifest["shards"] == [f"train-{i:06d}.tar" for i in range(len(manifest["shards"]))]
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest["shards"], "manifest.json", "skipped.jsonl"])
    assert manifest["counts"]["source"] == {"git10m": 7} and sum(manifest["counts"]["level"].values()) == 7
    assert manifest["counts"]["level"]["0"] == 1
    samples = _read(out)
    assert len(samples) == 7
    by_id = {json.loads(s["json"])["id"]: s for s in samples.values()}
    assert by_id["img_0.jpg"]["jpg"] == tiles[0]  # image bytes unchanged
    assert by_id["img_4.jpg"]["txt"].decode("utf-8") == NON_ASCII
    unknown = json.loads(by_id["img_3.jpg"]["json"])
    assert unknown["level"] == 0 and unknown["gsd_m"] is None and unknown["lat"] is None
    meta = json.loads(by_id["img_8.jpg"]["json"])
    assert meta["level"] == 1 and meta["gsd_m"] == 2.0**16
    assert (meta["lat"], meta["lon"]) == pytest.approx((0.0, 0.0), abs=1e-9)
    meta = json.loads(by_id["img_0.jpg"]["json"])
    assert (meta["lat"], meta["lon"]) == pytest.approx(web_mercator_nw_corner(10, 100, 200))
    assert meta["quality"] == 4.0 and meta["modality"] == "rgb" and (meta["width"], meta["height"]) == (64, 64)

    dm = ShardDataModule(str(out / "manifest.json"), batch_size=16, num_workers=0, shuffle_buffer=0, random_flip=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["key"]) == 7 and dm.skipped_samples == 0
    assert sorted(batch["level"].tolist()) == sorted(float(json.loads(s["json"])["level"]) for s in samples.values())
    # the same command again: complete, nothing rewritten
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert convert(Git10mSource(str(tmp_path / "part-0.parquet")), out, shard_count=2, rows_per_task=4, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(ValueError, match="different settings"):
        convert(Git10mSource(str(tmp_path / "part-0.parquet")), out, shard_count=3, progress=False)


def test_git10m_old_prefix_form_arrow_file(tiles, tmp_path):
    table = pa.table(
        {
            "image": [tiles[0], tiles[1], tiles[2]],
            "text": ["17_GOOGLE_LEVEL_a harbour with boats", "an airport", "99_GOOGLE_LEVEL_bad level"],
        }
    )
    with pa.ipc.new_file(str(tmp_path / "old.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    manifest = convert(Git10mSource(str(tmp_path / "old.arrow")), tmp_path / "out", progress=False)
    assert manifest["samples"] == 2 and manifest["skipped"] == {"bad_metadata": 1}
    metas = {s["txt"].decode(): json.loads(s["json"]) for s in _read(tmp_path / "out").values()}
    assert metas["a harbour with boats"]["level"] == 17 and metas["a harbour with boats"]["gsd_m"] == 1.0
    assert metas["an airport"]["level"] == 0 and metas["an airport"]["gsd_m"] is None


def test_git10m_save_to_disk_dataset_dict(tiles, tmp_path):
    """``DatasetDict.save_to_disk`` layout: dataset_dict.json + one folder per split with state.json and
    Arrow IPC *stream* files holding the Image feature as a {bytes, path} struct."""
    root = tmp_path / "git10m_saved"
    root.mkdir()
    (root / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    for split, idx in (("train", range(0, 5)), ("test", range(5, 8))):
        folder = root / split
        folder.mkdir()
        table = pa.Table.from_pylist(
            [
                {
                    "image": {"bytes": tiles[i + 12], "path": None},
                    "img_name": f"{split}_{i}.png",
                    "caption": f"{split} caption {i}",
                    "resolution": 16,
                    "Google_location": "16_100_100",
                    "img_quality_score": 5.0,
                }
                for i in idx
            ]
        )
        files = []
        for n, chunk in enumerate((table.slice(0, 2), table.slice(2))):
            name = f"data-{n:05d}-of-00002.arrow"
            with pa.ipc.new_stream(str(folder / name), table.schema) as writer:
                writer.write_table(chunk)
            files.append({"filename": name})
        (folder / "state.json").write_text(json.dumps({"_data_files": files, "_split": split, "_fingerprint": "x"}))
        (folder / "dataset_info.json").write_text("{}")
    manifest = convert(Git10mSource(str(root), split="test"), tmp_path / "out", rows_per_task=2, progress=False)
    assert manifest["samples"] == 3
    metas = [json.loads(s["json"]) for s in _read(tmp_path / "out").values()]
    assert sorted(m["id"] for m in metas) == ["test_5.png", "test_6.png", "test_7.png"]
    assert {m["split"] for m in metas} == {"test"} and {m["level"] for m in metas} == {16}
    both = convert(Git10mSource(str(root)), tmp_path / "all", rows_per_task=2, progress=False)
    assert both["samples"] == 8
    with pytest.raises(ValueError, match="no split"):
        Git10mSource(str(root), split="val").tasks(10)


def test_rsicd(tiles, tmp_path):
    images = tmp_path / "RSICD_images"
    images.mkdir()
    names = ["airport_1.jpg", "denseresidential_12.jpg", "00017.jpg", "beach_3.jpg"]
    for name, data in zip(names[:3], tiles, strict=False):  # beach_3.jpg is missing on disk
        (images / name).write_bytes(data)
    entries = [
        {"filename": n, "split": s, "imgid": i, "sentences": [{"raw": f"{n} caption {j} ."} for j in range(5)]}
        for i, (n, s) in enumerate(zip(names, ["train", "test", "test", "test"], strict=True))
    ]
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps({"images": entries, "dataset": "rsicd"}))
    manifest = convert(RsicdSource(str(tmp_path / "dataset_rsicd.json"), str(images), split="test"), tmp_path / "o")
    assert manifest["samples"] == 2 and manifest["skipped"] == {"missing_image": 1}
    metas = {m["id"]: m for m in (json.loads(s["json"]) for s in _read(tmp_path / "o").values())}
    assert metas["denseresidential_12.jpg"]["scene_class"] == "denseresidential"
    assert metas["00017.jpg"]["scene_class"] is None
    assert metas["00017.jpg"]["split"] == "test" and len(metas["00017.jpg"]["captions"]) == 5
    assert metas["00017.jpg"]["level"] == 0 and metas["00017.jpg"]["source"] == "rsicd"


def test_image_folder_csv_and_jsonl(tiles, tmp_path):
    images = tmp_path / "imgs"
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(tiles[0])
    (images / "sub" / "b.png").write_bytes(tiles[13])
    PIL.Image.open(io.BytesIO(tiles[14])).save(images / "c.tif")  # TIFF: the loader can't read it -> PNG
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    csv_text = (
        "image,caption,gsd_m,lat,lon,quality,modality\n"
        "a.jpg,fields and a road,10,37.5,-75.7,4.9,rgb\n"
        "sub/b.png,a lagoon,,,,,nir\n"
        "c.tif,tidal marsh,0.5,,,,\n"
        "broken.png,nothing,,,,,\n"
        "a.jpg,,10,,,,\n"
        "a.jpg,only lat,10,12.0,,,\n"
    )
    (tmp_path / "captions.csv").write_text(csv_text)
    manifest = convert(FolderSource(str(images), str(tmp_path / "captions.csv")), tmp_path / "o", progress=False)
    assert manifest["samples"] == 3
    assert manifest["skipped"] == {"bad_metadata": 1, "missing_caption": 1, "undecodable_image": 1}
    assert manifest["counts"]["modality"] == {"nir": 1, "rgb": 2}
    samples = {json.loads(s["json"])["id"]: s for s in _read(tmp_path / "o").values()}
    a = json.loads(samples["a.jpg"]["json"])
    assert a["gsd_m"] == 10 and a["level"] == pytest.approx(17 - math.log2(10), abs=1e-6) and a["lat"] == 37.5
    assert samples["sub/b.png"]["png"] == tiles[13]
    assert "png" in samples["c.tif"] and PIL.Image.open(io.BytesIO(samples["c.tif"]["png"])).size == (64, 64)
    assert json.loads(samples["c.tif"]["json"])["level"] == 18

    lines = [
        {"file_name": "a.jpg", "text": "fields", "level": 13, "gsd_m": 16.0},
        {"file_name": "a.jpg", "text": "fields", "level": 13, "gsd_m": 100.0},  # disagree
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    manifest = convert(FolderSource(str(images), str(tmp_path / "captions.jsonl")), tmp_path / "j", progress=False)
    assert manifest["samples"] == 1 and manifest["skipped"] == {"bad_metadata": 1}


def test_size_bounded_shards(tiles, tmp_path):
    (tmp_path / "imgs").mkdir()
    lines = []
    for i, data in enumerate(tiles):
        (tmp_path / "imgs" / f"{i}.img").write_bytes(data)
        lines.append(json.dumps({"image": f"{i}.img", "caption": f"tile {i}"}))
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    bound = 60_000
    manifest = convert(
        FolderSource(str(tmp_path / "imgs"), str(tmp_path / "c.jsonl")), tmp_path / "o", shard_bytes=bound, workers=2
    )
    sizes = [(tmp_path / "o" / s).stat().st_size for s in manifest["shards"]]
    assert manifest["samples"] == 24 and len(sizes) >= 3 and max(sizes) <= bound
    assert manifest["bytes"] == sum(sizes)


class _Interrupted(FolderSource):
    """The same source, but the run is killed (KeyboardInterrupt) when it reaches row ``at``."""

    at = 13

    def record(self, row, task, row_index):
        if row_index == self.at:
            raise KeyboardInterrupt
        return super().record(row, task, row_index)


def test_resume_after_interruption(tiles, tmp_path):
    (tmp_path / "imgs").mkdir()
    lines = []
    for i, data in enumerate(tiles):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(data)
        lines.append(json.dumps({"image": f"{i}.png", "caption": f"tile {i}"}))
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    args = dict(shard_count=3, rows_per_task=5, progress=False)
    source = FolderSource(str(tmp_path / "imgs"), str(tmp_path / "c.jsonl"))
    with pytest.raises(KeyboardInterrupt):
        convert(_Interrupted(source.images, source.captions), tmp_path / "o", **args)
    parts = tmp_path / "o" / ".parts"
    assert sorted(p.name for p in parts.glob("*.json")) == ["000000.json", "000001.json", "settings.json"]
    assert not list(parts.glob("000002-*")) and not list(parts.glob(".*.tmp"))  # the killed task left nothing
    kept = {p.name: p.stat().st_ino for p in parts.glob("00000[01]-*.tar")}
    assert len(kept) == 4
    # Task 0's marker as a version before per-part counts wrote it: its parts are counted from their headers.
    marker = json.loads((parts / "000000.json").read_text())
    assert marker.pop("part_samples") == [3, 2]  # 5 rows, shards of 3
    (parts / "000000.json").write_text(json.dumps(marker))
    manifest = convert(source, tmp_path / "o", **args)
    assert manifest["samples"] == 24 and not parts.exists()
    counted = {name: sum(1 for _ in read_shard_samples(tmp_path / "o" / name)) for name in manifest["shards"]}
    assert manifest["shard_samples"] == counted and sum(counted.values()) == 24
    finals = {p.stat().st_ino for p in (tmp_path / "o").glob("train-*.tar")}
    assert set(kept.values()) <= finals  # renamed, not rewritten
    fresh = convert(source, tmp_path / "fresh", **args)
    assert fresh["shards"] == manifest["shards"] and fresh["shard_samples"] == counted
    for name in manifest["shards"]:
        assert (tmp_path / "o" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_cli_convert_and_errors(tiles, tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.jpg").write_bytes(tiles[0])
    (tmp_path / "c.csv").write_text("image,caption\na.jpg,fields\nmissing.jpg,x\n")
    out = tmp_path / "o"
    code = main(
        ["data", "convert", "folder", str(tmp_path / "imgs"), "--captions", str(tmp_path / "c.csv"), "--out", str(out)]
    )
    assert code == 0
    assert "wrote 1 samples in 1 shards" in capsys.readouterr().out
    assert main(["data", "convert", "folder", str(tmp_path / "imgs"), "--out", str(out)]) == 2
    assert "--captions" in capsys.readouterr().err
    assert main(["data", "convert", "git10m", str(tmp_path / "nothing-*.parquet"), "--out", str(tmp_path / "g")]) == 2
    assert "no Parquet/Arrow" in capsys.readouterr().err


def test_cli_rsicd_split_names_the_shards(tiles, tmp_path, capsys):
    """`convert rsicd --split test` writes test-* shards (the split names them unless --prefix does)."""
    images = tmp_path / "RSICD_images"
    images.mkdir()
    (images / "airport_1.jpg").write_bytes(tiles[0])
    (images / "beach_2.jpg").write_bytes(tiles[1])
    entries = [
        {"filename": name, "split": split, "sentences": [{"raw": f"{name} caption ."}]}
        for name, split in (("airport_1.jpg", "test"), ("beach_2.jpg", "train"))
    ]
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps({"images": entries}))
    argv = ["data", "convert", "rsicd", str(tmp_path / "dataset_rsicd.json"), "--images", str(images)]
    assert main([*argv, "--split", "test", "--out", str(tmp_path / "t")]) == 0
    assert [p.name for p in (tmp_path / "t").glob("*.tar")] == ["test-000000.tar"]
    assert main([*argv, "--split", "test", "--prefix", "rsicd", "--out", str(tmp_path / "p")]) == 0
    assert [p.name for p in (tmp_path / "p").glob("*.tar")] == ["rsicd-000000.tar"]
