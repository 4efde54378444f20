"""Sampling pipelines: text-to-image now; inpainting, outpainting and translation reuse its loop."""

from text2earth.pipelines.guidance import ClassifierFreeGuidance, TextLevelGuidance
from text2earth.pipelines.schedulers import SCHEDULERS, make_scheduler
from text2earth.pipelines.text2img import Text2EarthPipeline, Text2EarthPipelineOutput

__all__ = [
    "SCHEDULERS",
    "ClassifierFreeGuidance",
    "Text2EarthPipeline",
    "Text2EarthPipelineOutput",
    "TextLevelGuidance",
    "make_scheduler",
]
