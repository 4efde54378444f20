"""text2earth: text-driven remote-sensing image generation at a chosen ground resolution."""

import os
from typing import Any

__version__ = "0.1.0"

# No network at run time: every model comes from a local folder. Set before huggingface_hub is imported
# anywhere below this package (it reads the variable once, at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Heavy imports (torch, diffusers) happen only when these names are first used, so that
# `import text2earth` (CLI start-up, Hydra config resolution) stays cheap.
_LAZY = {
    "Text2EarthPipeline": "text2earth.pipelines.text2img",
    "Text2EarthPipelineOutput": "text2earth.pipelines.text2img",
    "Text2EarthInpaintPipeline": "text2earth.pipelines.inpaint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'text2earth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
