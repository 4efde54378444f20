"""Sampling pipelines: text-to-image, inpainting (editing); outpainting and translation reuse the same loop."""

from text2earth.pipelines.guidance import ClassifierFreeGuidance, TextLevelGuidance
from text2earth.pipelines.inpaint import Text2EarthInpaintPipeline
from text2earth.pipelines.schedulers import SCHEDULERS, make_scheduler
from text2earth.pipelines.text2img import SamplingRequest, Text2EarthPipeline, Text2EarthPipelineOutput

__all__ = [
    "SCHEDULERS",
    "ClassifierFreeGuidance",
    "SamplingRequest",
    "Text2EarthInpaintPipeline",
    "Text2EarthPipeline",
    "Text2EarthPipelineOutput",
    "TextLevelGuidance",
    "make_scheduler",
]
