"""``maskconver serve``: an HTTP API and a web page over a checkpoint or an exported model.

Open http://127.0.0.1:8000/ for the page (drop a photo: overlay, legend, segment table), or call
the API: ``POST /v1/predict`` (an image as the multipart field ``file`` or as the raw body;
``?format=json|png|overlay``), ``GET /v1/model``, ``GET /healthz``. See docs/serving.md.

Bounded by design: a body over ``--max-upload-mb`` is a 413 (before it is read whole), a request
past ``--max-concurrency`` in flight is a 503 with ``Retry-After`` (no queue), an image over
``--max-megapixels`` is a 400, a body not sent within ``--body-timeout`` seconds is a 408. The
model runs one request at a time in a worker thread. Listens on 127.0.0.1 unless ``--host`` says
otherwise; there is no authentication, so expose it only behind something that adds it. Needs
the ``serve`` extra: ``pip install 'maskconver[serve]'``.
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
from pathlib import Path
from typing import Any

from maskconver.commands.common import (
    add_model_source,
    check_model_source,
    load_exported,
    non_negative_int,
    positive_float,
    positive_int,
)
from maskconver.errors import EXIT_OK, fail

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_PORT = 65535
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_MEGAPIXELS = 40.0
DEFAULT_BODY_TIMEOUT_S = 30.0
SERVE_MODULES = ("starlette", "uvicorn", "python_multipart")
BYTES_PER_MB = 1 << 20


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="HTTP API + web page for predictions (needs the serve extra)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_source(p)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})"
    )
    p.add_argument(
        "--port",
        type=non_negative_int,
        default=DEFAULT_PORT,
        help=f"TCP port, 0..{MAX_PORT} (0: any free one; default {DEFAULT_PORT})",
    )
    p.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=DEFAULT_MAX_CONCURRENCY,
        help="predict requests in flight at once; more get 503 + Retry-After "
        f"(default {DEFAULT_MAX_CONCURRENCY})",
    )
    p.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest request body in MB; larger gets 413 (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    p.add_argument(
        "--max-megapixels",
        type=positive_float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="largest image (width x height) in megapixels; larger gets 400 "
        f"(default {DEFAULT_MAX_MEGAPIXELS:g})",
    )
    p.add_argument(
        "--body-timeout",
        type=positive_float,
        default=DEFAULT_BODY_TIMEOUT_S,
        help="seconds a client has to send its whole body; slower gets 408 "
        f"(default {DEFAULT_BODY_TIMEOUT_S:g})",
    )
    p.set_defaults(func=run)


def missing_extra() -> str | None:
    """The first module of the ``serve`` extra that does not import, else None."""
    for module in SERVE_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            return module
    return None


def load_predictor(args: argparse.Namespace) -> Any:
    """The ``Predictor`` of ``--checkpoint`` (torch) or ``--model`` (an exported file)."""
    from maskconver.predictor import Predictor

    if args.model:
        return load_exported(args.model, threads=args.threads, precision=args.precision)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return Predictor.from_checkpoint(args.checkpoint, device=args.device, optimize=args.optimize)


def model_name(source: str) -> str:
    """What ``GET /v1/model`` calls the model: the file or folder name, never its full path.

    A checkpoint folder inside ``<run>/checkpoints/`` is named ``<run>/<folder>``
    (``quickstart/best``).
    """
    path = Path(source).resolve()
    if path.parent.name == "checkpoints":
        return f"{path.parent.parent.name}/{path.name}"
    return path.name


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    """Load the model and serve it until interrupted."""
    missing = missing_extra()
    if missing is not None:
        return fail(
            "serve",
            f"needs the serve extra ({missing} is missing): pip install 'maskconver[serve]'",
        )
    if args.port > MAX_PORT:
        return fail("serve", f"--port must be in 0..{MAX_PORT}, got {args.port}")
    problem = check_model_source(args)
    source = args.checkpoint or args.model
    if problem is None and not Path(source).exists():
        problem = f"{'checkpoint' if args.checkpoint else 'model'} not found: {source}"
    if problem:
        return fail("serve", problem)
    import uvicorn

    from maskconver.serve.app import create_app
    from maskconver.serve.server import uvicorn_config

    predictor = load_predictor(args)
    app = create_app(
        predictor,
        max_concurrency=args.max_concurrency,
        max_upload_bytes=int(args.max_upload_mb * BYTES_PER_MB),
        max_pixels=int(args.max_megapixels * 1e6),
        body_timeout_s=args.body_timeout,
        name=model_name(source),
    )
    if not is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: anyone who reaches this machine can use the "
            "model (no authentication)"
        )
    print(f"serving {source} on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    config = uvicorn_config(
        app, host=args.host, port=args.port, max_concurrency=args.max_concurrency
    )
    uvicorn.Server(config).run()
    return EXIT_OK
