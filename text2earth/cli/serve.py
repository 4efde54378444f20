"""``text2earth serve``: the local web app (map, generate, edit, grow, download) on a model folder."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="the local web app: generate, edit and grow scenes on a map")
    serve.add_argument("--model", required=True, help="text-to-image model folder (e.g. weights/demo)")
    serve.add_argument(
        "--inpaint-model",
        default=None,
        help="inpainting model folder for edits and growing (default: the text-to-image UNet widened to 9 "
        "channels, which ignores the mask: new pixels are blended in over --feather pixels)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed at start)")
    serve.add_argument("--out", default="outputs/serve", help="folder of the scenes (kept across restarts)")
    serve.add_argument("--steps", type=int, default=20, help="sampling steps per tile")
    serve.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    serve.add_argument(
        "--overlap", type=int, default=None, help="pixels a new tile overlaps the scene (default: tile/4)"
    )
    serve.add_argument("--feather", type=int, default=8, help="pixels over which new content blends into kept pixels")
    serve.add_argument("--queue", type=int, default=4, help="jobs that may wait; more are refused with HTTP 429")
    serve.add_argument(
        "--basemap-url",
        default=None,
        help="an online tile URL for the page's base map, e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png "
        "(default: the offline map drawn from the shipped land mask)",
    )
    serve.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from data_modules.embedded.scenes import footprints
    from text2earth.apps.serve.engine import Settings
    from text2earth.apps.serve.server import build_app, make_server
    from text2earth.core.errors import UserError
    from text2earth.models.components import check_model_folder

    for name in ("steps", "queue"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.port < 65536:
        raise UserError(f"--port must lie in 0..65535, got {args.port}")
    for folder in filter(None, (args.model, args.inpaint_model)):
        check_model_folder(folder)
    settings = Settings(
        model=args.model,
        inpaint_model=args.inpaint_model,
        steps=args.steps,
        guidance=args.guidance,
        overlap=args.overlap,
        feather=args.feather,
        device=args.device,
    )
    app = build_app(settings, args.out, args.queue, args.basemap_url, footprints())
    try:
        server = make_server(app, args.host, args.port)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    host, port = server.server_address[:2]
    print(f"text2earth serve: http://{host}:{port}/ (API: http://{host}:{port}/openapi.json); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
