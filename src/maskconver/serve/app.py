"""The Starlette application of ``maskconver serve``: the API and the page over one ``Predictor``.

Routes:

* ``GET /``, ``/static/app.js``, ``/static/app.css``: the page (package files read once at start;
  no path of a request ever names a file);
* ``GET /healthz``: ``{"status": "ok"}``;
* ``GET /v1/model``: the model (``results.model_json``);
* ``POST /v1/predict``: an image (multipart field ``file`` or a raw body) in;
  ``?format=json`` (default: ``results.prediction_json``; with ``&include=panoptic`` also
  ``panoptic_png``, the COCO panoptic PNG as base64), ``png`` (that PNG) or ``overlay`` (the
  drawn overlay PNG) out.

A predict request, in order: a ``Content-Length`` over the limit is a 413 before any byte is
read; one past ``max_concurrency`` requests in flight is a 503 with ``Retry-After`` (no queue);
the body is read whole (counted: 413 past the limit; 408 past ``body_timeout_s``) BEFORE the
request waits for the model, so a slow client holds an admission slot but never the model;
decoding, the model (one call at a time, behind a lock) and encoding run in worker threads, so
the event loop keeps serving. Every refusal is ``{"error": "<one line>"}`` with its status.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from maskconver.serve.errors import HttpError
from maskconver.serve.limits import (
    HTTP_BAD_REQUEST,
    HTTP_TIMEOUT,
    InFlight,
    check_declared_length,
    read_body,
)
from maskconver.serve.results import model_json, overlay_png, panoptic_png, prediction_json
from maskconver.serve.upload import DEFAULT_MAX_PIXELS, decode_image, image_bytes

if TYPE_CHECKING:
    import numpy as np
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from maskconver.postprocess.segments import PanopticPrediction
    from maskconver.predictor import Predictor

DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
DEFAULT_BODY_TIMEOUT_S = 30.0
FORMATS = ("json", "png", "overlay")
PNG = "image/png"
HTTP_INTERNAL = 500
STATIC = {  # route -> (package file, media type): the whole set of files the server sends
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """Route -> (content, media type) of the page's files, read from the package once."""
    root = resources.files("maskconver.serve") / "static"
    return {route: ((root / name).read_bytes(), media) for route, (name, media) in STATIC.items()}


def create_app(
    predictor: Predictor,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    name: str = "model",
) -> Starlette:
    """The application serving ``predictor``.

    Args:
        predictor: the model (any backend); called from one worker thread at a time.
        max_concurrency: predict requests admitted at once (reading, waiting, running); one
            more is a 503 with ``Retry-After``.
        max_upload_bytes: the largest request body; a larger one is a 413.
        max_pixels: the largest ``width * height`` of an uploaded image (400 beyond).
        body_timeout_s: seconds a client has to send its whole body (408 beyond).
        name: what ``GET /v1/model`` calls the model (a file or folder name, never a path).
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    in_flight = InFlight(max_concurrency)
    model_lock = threading.Lock()  # a thread lock: TestClient may run each request on a new loop
    files = static_files()
    info = model_json(predictor, name)

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse(
            {"error": message}, status, headers={**SECURITY_HEADERS, **(headers or {})}
        )

    async def on_refused(request: Request, exc: Exception) -> Response:
        refused = cast(HttpError, exc)
        return error(refused.status, refused.message, refused.headers)

    async def on_routing_error(request: Request, exc: Exception) -> Response:
        # 404 and 405 (with its Allow header) of the router, as one-line JSON
        http = cast(HTTPException, exc)
        message = f"{http.detail}: {request.method} {request.url.path}"
        return error(http.status_code, message, dict(http.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # the message may name server paths: the client gets the type, the log the traceback
        return error(HTTP_INTERNAL, f"internal server error ({type(exc).__name__})")

    def static(route: str) -> Callable[[Request], Awaitable[Response]]:
        content, media = files[route]

        async def endpoint(request: Request) -> Response:
            return Response(content, media_type=media, headers=SECURITY_HEADERS)

        return endpoint

    def run_model(image: np.ndarray) -> tuple[PanopticPrediction, float]:
        with model_lock:  # one model call at a time; waiting requests hold their admission
            start = time.perf_counter()
            prediction = predictor(image)
            return prediction, 1000 * (time.perf_counter() - start)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=SECURITY_HEADERS)

    async def model(request: Request) -> Response:
        return JSONResponse(info, headers=SECURITY_HEADERS)

    async def predict(request: Request) -> Response:
        fmt = request.query_params.get("format", "json")
        if fmt not in FORMATS:
            raise HttpError(
                HTTP_BAD_REQUEST, f"format must be one of {', '.join(FORMATS)}, got {fmt!r}"
            )
        check_declared_length(request.headers.get("content-length"), max_upload_bytes)
        in_flight.enter()
        try:
            try:
                body = await asyncio.wait_for(
                    read_body(request.stream(), max_upload_bytes), body_timeout_s
                )
            except asyncio.TimeoutError:
                raise HttpError(
                    HTTP_TIMEOUT, f"request body not received within {body_timeout_s:g} s"
                ) from None
            data, what = image_bytes(body, request.headers.get("content-type"))
            del body
            image = await run_in_threadpool(decode_image, data, what, max_pixels=max_pixels)
            del data
            prediction, latency_ms = await run_in_threadpool(run_model, image)
            headers = {**SECURITY_HEADERS, "X-Latency-Ms": f"{latency_ms:.2f}"}
            if fmt == "png":
                content = await run_in_threadpool(panoptic_png, prediction)
                return Response(content, media_type=PNG, headers=headers)
            if fmt == "overlay":
                content = await run_in_threadpool(
                    overlay_png, image, prediction, predictor.categories
                )
                return Response(content, media_type=PNG, headers=headers)
            payload = await run_in_threadpool(
                prediction_json, prediction, predictor.categories, latency_ms
            )
            if "panoptic" in request.query_params.get("include", "").split(","):
                encoded = await run_in_threadpool(panoptic_png, prediction)
                payload["panoptic_png"] = base64.b64encode(encoded).decode("ascii")
            return JSONResponse(payload, headers=headers)
        finally:
            in_flight.leave()

    routes = [Route(path, static(path), methods=["GET"]) for path in files]
    routes += [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/model", model, methods=["GET"]),
        Route("/v1/predict", predict, methods=["POST"]),
    ]
    handlers: dict[Any, Any] = {
        HttpError: on_refused,
        HTTPException: on_routing_error,
        Exception: on_unexpected,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.in_flight = in_flight
    return app
