import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import lightning.pytorch  # noqa: E402, F401 (below)
import pytest  # noqa: E402
import torch  # noqa: E402

# Lightning gives its logger a handler on the sys.stderr of the moment it is first imported. Imported inside a
# test that captures output (capsys), that stream closes with the test, and every later Lightning log line
# prints a "Logging error" traceback into some other test's stderr. Importing it here binds the session's.

# One thread: tiny ops oversubscribe two cores shared with DataLoader workers (10x+ slower).
torch.set_num_threads(1)


@pytest.fixture
def tiny_components():
    """Fresh random tiny components (real diffusers / transformers classes)."""
    from text2earth.models.components import build_from_preset

    return build_from_preset("tiny", seed=0)


@pytest.fixture(scope="session")
def real_batch(embedded_shards):
    """16 real held-out tiles as a training batch (the DataModule's batch contract)."""
    from data_modules.webdataset_datamodule import ShardDataModule

    dm = ShardDataModule(
        train_shards=f"{embedded_shards}/val-*.tar",
        val_shards=f"{embedded_shards}/val-*.tar",
        batch_size=16,
        num_workers=0,
    )
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    return {k: batch[k] for k in ("pixel_values", "caption", "level")}


@pytest.fixture(scope="session")
def embedded_shards(tmp_path_factory):
    """The full embedded real tiles (3,652; data_modules/embedded), built once per session; the shard folder.

    For tests that need the real counts, every level, or the trained-on tiles; others take ``embedded_small``.
    """
    from data_modules.embedded import build_embedded_shards

    out = tmp_path_factory.mktemp("embedded")
    build_embedded_shards(out, progress=False)
    return out


@pytest.fixture(scope="session")
def embedded_small(tmp_path_factory):
    """Every 8th tile of each level and split of the full set (same tiles, keys, captions; ~460 tiles, ~4 s)."""
    from data_modules.embedded import build_embedded_shards

    out = tmp_path_factory.mktemp("embedded_small")
    build_embedded_shards(out, progress=False, every=8)
    return out


# Module fixtures that take ten seconds or more to build: every test that uses one is a slow test
# (`make test` runs them all; `make test-fast` skips the slow ones).
SLOW_FIXTURES = {"pairs_dir", "trained_variants"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def four_shards(embedded_small, tmp_path_factory):
    """48 real tiles in 4 shards of 12 (one per rank and worker in the 2-rank runs); the folder and the keys."""
    from pathlib import Path

    import webdataset as wds

    from text2earth.io.shards import read_shard_samples

    samples = [s for shard in sorted(Path(embedded_small).glob("val-*.tar")) for s in read_shard_samples(shard)][:48]
    folder = tmp_path_factory.mktemp("mp_shards")
    for i in range(4):
        with wds.TarWriter(str(folder / f"train-{i:06d}.tar")) as sink:
            for s in samples[i * 12 : (i + 1) * 12]:
                sink.write(s)
    return folder, [s["__key__"] for s in samples]


@pytest.fixture(scope="module")
def text2img_pipe():
    """A fresh tiny text-to-image pipeline (Euler, no bar), for the canvas tests."""
    from text2earth.models.components import build_from_preset
    from text2earth.pipelines.text2img import Text2EarthPipeline

    pipe = Text2EarthPipeline.from_components(build_from_preset("tiny", seed=0), scheduler="euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inpaint_pipe():
    """The same tiny model with a 9-channel inpainting UNet (Euler, no bar)."""
    from text2earth.models.components import build_from_preset
    from text2earth.models.inpainting import inpainting_unet_from
    from text2earth.pipelines.inpaint import Text2EarthInpaintPipeline

    parts = build_from_preset("tiny", seed=0)
    parts.unet = inpainting_unet_from(parts.unet)
    pipe = Text2EarthInpaintPipeline.from_components(parts, scheduler="euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe
