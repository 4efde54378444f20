"""The HTTP API of ``text2earth serve``, as OpenAPI 3.1 (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
JOB = {"$ref": "#/components/schemas/Job"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _submit(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "202": _json(JOB, "queued; poll /api/jobs/{id}"),
                "400": _json(ERROR, "bad input (one readable message)"),
                "404": _json(ERROR, "no such scene"),
                "413": _json(ERROR, "request body too large"),
                "429": _json(ERROR, "the work queue is full"),
            },
        }
    }


def openapi_spec(max_body: int) -> dict[str, Any]:
    scene_id = {"name": "scene_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "text2earth serve",
            "version": "1",
            "description": "Generate remote-sensing tiles on a Web-Mercator map, edit them under a mask, grow "
            f"them into unbounded scenes, download PNG / COG / STAC. Request bodies are JSON, at most {max_body} bytes.",
        },
        "paths": {
            "/api/config": {
                "get": {
                    "summary": "model tile size, level range, available features, base-map URL",
                    "responses": {"200": _json({"type": "object"}, "settings")},
                }
            },
            "/api/generate": _submit(
                "a new scene: one tile centred on a map point",
                {
                    "type": "object",
                    "required": ["prompt", "level", "lat", "lon"],
                    "properties": {
                        "prompt": {"type": "string", "maxLength": 300},
                        "level": {"type": "number", "exclusiveMinimum": 0, "maximum": 24},
                        "lat": {"type": "number", "minimum": -85.0511, "maximum": 85.0511},
                        "lon": {"type": "number", "minimum": -180, "maximum": 180},
                        "seed": {"type": "integer", "minimum": 0},
                    },
                },
            ),
            "/api/edit": _submit(
                "repaint the white part of a mask of a scene (pixels outside it stay exact)",
                {
                    "type": "object",
                    "required": ["scene_id", "prompt", "mask"],
                    "properties": {
                        "scene_id": {"type": "string"},
                        "prompt": {"type": "string", "maxLength": 300},
                        "mask": {"type": "string", "description": "PNG data URL of the scene's size, white = repaint"},
                        "seed": {"type": "integer", "minimum": 0},
                    },
                },
            ),
            "/api/extend": _submit(
                "grow a scene by one tile row or column at its level (tile-by-tile outpainting)",
                {
                    "type": "object",
                    "required": ["scene_id", "direction"],
                    "properties": {
                        "scene_id": {"type": "string"},
                        "direction": {"enum": ["east", "west", "north", "south"]},
                        "prompt": {"type": "string", "description": "default: the scene's prompt"},
                        "seed": {"type": "integer", "minimum": 0},
                    },
                },
            ),
            "/api/jobs/{job_id}": {
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "get": {
                    "summary": "state and progress of a job",
                    "responses": {"200": _json(JOB, "the job"), "404": _json(ERROR, "no such job")},
                },
                "delete": {
                    "summary": "cancel a queued or running job",
                    "responses": {"200": _json(JOB, "the job"), "404": _json(ERROR, "no such job")},
                },
            },
            "/api/scenes": {
                "get": {
                    "summary": "every finished scene",
                    "responses": {
                        "200": _json({"type": "array", "items": {"$ref": "#/components/schemas/Scene"}}, "scenes")
                    },
                }
            },
            "/api/scenes/{scene_id}": {
                "parameters": [scene_id],
                "get": {
                    "summary": "one scene: bounds, level, pixel sizes, files",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Scene"}, "the scene"),
                        "404": _json(ERROR, "no such scene"),
                    },
                },
            },
            "/api/scenes/{scene_id}/files/{name}": {
                "parameters": [
                    scene_id,
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["scene.png", "scene.tif", "scene.stac.json", "scene.json"]},
                    },
                ],
                "get": {
                    "summary": "download a scene file (COG and STAC item with the [geo] extra)",
                    "responses": {"200": {"description": "the file"}, "404": _json(ERROR, "no such file")},
                },
            },
            "/api/basemap/{z}/{x}/{y}.png": {
                "get": {
                    "summary": "offline base-map tile: shipped land mask and the embedded scenes' outlines",
                    "responses": {"200": {"description": "PNG tile", "content": {"image/png": {}}}},
                },
            },
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "op": {"enum": ["generate", "edit", "extend"]},
                        "state": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
                        "progress": {"type": "number"},
                        "message": {"type": "string"},
                        "scene_id": {"type": ["string", "null"]},
                    },
                },
                "Scene": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "level": {"type": "number"},
                        "width": {"type": "integer"},
                        "height": {"type": "integer"},
                        "bounds": {"type": "object", "description": "west, south, east, north in degrees"},
                        "nominal_gsd_m": {"type": "number"},
                        "pixel_size_m": {"type": "number", "description": "EPSG:3857 metres per pixel"},
                        "ground_size_m": {
                            "type": "number",
                            "description": "true ground metres per pixel at the centre",
                        },
                        "files": {"type": "object"},
                        "version": {"type": "integer"},
                    },
                },
            }
        },
    }
