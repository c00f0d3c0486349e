"""``maskconver serve``: every endpoint, every refusal (status + message), results == Predictor.

The model is the tiny preset with random weights and the merge opened up (every threshold 0, so
even untrained proposals become segments); building it takes about a second. Most tests drive
the app with Starlette's ``TestClient`` (no socket); the slow-client and over-concurrency tests
run it under uvicorn on a loopback port (``serve.server.BackgroundServer``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("python_multipart", reason="the serve extra is not installed")
pytest.importorskip("httpx", reason="the serve extra is not installed (TestClient needs httpx)")

import torch  # noqa: E402
from conftest import SMALL_UNTRAINED_RUN  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from maskconver.build import (  # noqa: E402
    build_eval_transforms,
    build_model,
    build_postprocessor,
    resolve_num_classes,
)
from maskconver.config import load_config  # noqa: E402
from maskconver.data.panoptic_png import rgb2id  # noqa: E402
from maskconver.data.synthetic import SyntheticPanoptic, synthetic_categories  # noqa: E402
from maskconver.predictor import Predictor  # noqa: E402
from maskconver.serve.app import create_app  # noqa: E402
from maskconver.serve.errors import HttpError  # noqa: E402
from maskconver.serve.limits import InFlight, read_body  # noqa: E402
from maskconver.serve.server import BackgroundServer  # noqa: E402
from maskconver.visualize import overlay  # noqa: E402

MAX_UPLOAD = 256 * 1024
MAX_PIXELS = 1_000_000
MAX_CONCURRENCY = 2
BODY_TIMEOUT_S = 1.0


def tiny_predictor() -> Predictor:
    """The tiny preset, random weights (seed 0), merge thresholds 0, eval size 64."""
    cfg = load_config("tiny", SMALL_UNTRAINED_RUN)
    categories = synthetic_categories()
    num_classes = resolve_num_classes(cfg, categories)
    torch.manual_seed(0)
    return Predictor(
        build_model(cfg.model, num_classes),
        cfg=cfg,
        categories=categories,
        postprocessor=build_postprocessor(cfg, categories, num_classes),
        transform=build_eval_transforms(cfg),
    )


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return tiny_predictor()


@pytest.fixture(scope="module")
def app(predictor: Predictor) -> Any:
    return create_app(
        predictor,
        max_concurrency=MAX_CONCURRENCY,
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        body_timeout_s=BODY_TIMEOUT_S,
        name="tiny-random",
    )


@pytest.fixture(scope="module")
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A synthetic scene, ``[H, W, 3]`` uint8 (151 x 137)."""
    return SyntheticPanoptic(1, seed=0)[0].image


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (RGB), with one tiny IDAT: never decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def expected_bbox(panoptic: np.ndarray, segment_id: int) -> list[int]:
    ys, xs = np.nonzero(panoptic == segment_id)
    return [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]


# --- the endpoints ---------------------------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_model(client: TestClient, predictor: Predictor) -> None:
    info = client.get("/v1/model").json()
    assert info["name"] == "tiny-random"
    assert info["backend"] == "torch"
    assert info["meta_architecture"] == predictor.cfg.model.meta_architecture
    assert info["input_size"] == 64
    assert [(c["id"], c["name"], c["isthing"]) for c in info["categories"]] == [
        (c.id, c.name, c.isthing) for c in predictor.categories.categories
    ]


def test_page_and_its_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "/static/app.js" in page.text and "/static/app.css" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from outside
    js = client.get("/static/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "/v1/predict" in js.text and "https://" not in js.text
    assert client.get("/static/app.css").headers["content-type"].startswith("text/css")
    # only those three files exist: no path from a request ever reaches the file system
    for path in ("/static/index.html", "/static/../../pyproject.toml", "/static/%2e%2e/app.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "error" in response.json()


def test_json_segments_equal_the_predictor(
    client: TestClient, predictor: Predictor, scene: np.ndarray
) -> None:
    response = client.post("/v1/predict", files={"file": ("scene.png", png(scene), "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predictor(scene)
    assert (body["width"], body["height"]) == (scene.shape[1], scene.shape[0])
    assert body["latency_ms"] > 0
    assert float(response.headers["x-latency-ms"]) > 0
    assert len(body["segments"]) == len(expected.segments) >= 1
    for got, seg in zip(body["segments"], sorted(expected.segments, key=lambda s: s.id)):
        assert got["id"] == seg.id
        assert got["category_id"] == seg.category_id
        assert got["category"] == predictor.categories.by_id[seg.category_id].name
        assert got["isthing"] == seg.isthing
        assert got["area"] == seg.area == int((expected.panoptic == seg.id).sum())
        assert got["score"] == pytest.approx(seg.score, abs=1e-4)
        assert got["bbox"] == expected_bbox(expected.panoptic, seg.id)
        assert len(got["color"]) == 3


def test_raw_body_gives_the_same_result(client: TestClient, scene: np.ndarray) -> None:
    form = client.post("/v1/predict", files={"file": ("s.png", png(scene), "image/png")}).json()
    for content_type in ("image/png", "application/octet-stream"):
        raw = client.post(
            "/v1/predict", content=png(scene), headers={"content-type": content_type}
        ).json()
        assert raw["segments"] == form["segments"]


def test_png_round_trip(client: TestClient, predictor: Predictor, scene: np.ndarray) -> None:
    response = client.post("/v1/predict?format=png", content=png(scene))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    ids = rgb2id(np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")))
    np.testing.assert_array_equal(ids, predictor(scene).panoptic)
    # the JSON's inline copy (the page's input) is the same PNG
    body = client.post("/v1/predict?include=panoptic", content=png(scene)).json()
    inline = Image.open(io.BytesIO(base64.b64decode(body["panoptic_png"]))).convert("RGB")
    np.testing.assert_array_equal(rgb2id(np.asarray(inline)), ids)


def test_overlay(client: TestClient, predictor: Predictor, scene: np.ndarray) -> None:
    response = client.post("/v1/predict?format=overlay", content=png(scene))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    pred = predictor(scene)
    np.testing.assert_array_equal(
        got, overlay(scene, pred.panoptic, pred.segments, predictor.categories)
    )


def test_jpeg_and_grayscale_are_accepted(client: TestClient, scene: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(scene).convert("L").save(buffer, format="JPEG")
    body = client.post("/v1/predict", content=buffer.getvalue()).json()
    assert (body["width"], body["height"]) == (scene.shape[1], scene.shape[0])


# --- refusals: status and one-line message ---------------------------------------------------

BAD_REQUESTS = {
    # name: (request kwargs, status, words of the message)
    "wrong type (JSON)": (
        {"content": b'{"a": 1}', "headers": {"content-type": "application/json"}},
        415,
        "unsupported Content-Type application/json",
    ),
    "not an image": (
        {"content": b"hello, not an image", "headers": {"content-type": "image/png"}},
        415,
        "not an image in a supported format",
    ),
    "not an image in the form": (
        {"files": {"file": ("a.txt", b"plain text", "text/plain")}},
        415,
        "file 'a.txt' is not an image",
    ),
    "empty body": ({"content": b""}, 400, "empty request body"),
    "0-byte file": ({"files": {"file": ("zero.png", b"", "image/png")}}, 400, "is empty (0 bytes)"),
    "form without file": ({"files": {"photo": ("a.png", b"x", "image/png")}}, 400, "'file'"),
    "huge dimensions": (
        {"content": png_header_only(2000, 2000)},
        400,
        "2000 x 2000 = 4000000 pixels is over the server's limit of 1000000",
    ),
    "decompression bomb": (
        {"content": png_header_only(30000, 30000)},
        400,
        "decompression bomb refused (Image size (900000000 pixels)",
    ),
    "oversize (Content-Length)": ({"content": b"\0" * (MAX_UPLOAD + 1)}, 413, "over the server"),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_input_is_refused_with_a_reason(client: TestClient, name: str) -> None:
    kwargs, status, words = BAD_REQUESTS[name]
    response = client.post("/v1/predict", **kwargs)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert words in message, message
    assert "\n" not in message


def test_truncated_image(client: TestClient, scene: np.ndarray) -> None:
    data = png(scene)
    response = client.post("/v1/predict", content=data[: len(data) // 2])
    assert response.status_code == 400
    assert "truncated or corrupt image" in response.json()["error"]


def test_wrong_method_and_unknown_path(client: TestClient) -> None:
    for method, path in (("GET", "/v1/predict"), ("PUT", "/v1/predict"), ("POST", "/v1/model")):
        response = client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert "Method Not Allowed" in response.json()["error"]
        assert "allow" in response.headers
    assert client.post("/healthz").status_code == 405
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and "Not Found" in missing.json()["error"]


def test_a_model_failure_is_a_500_without_details(predictor: Predictor, scene: np.ndarray) -> None:
    class Broken:
        cfg, categories, model = predictor.cfg, predictor.categories, predictor.model

        def __call__(self, image: np.ndarray) -> Any:
            raise RuntimeError("secret /srv/path")

    app = create_app(Broken())  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as broken:
        response = broken.post("/v1/predict", content=png(scene))
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error (RuntimeError)"}
    assert app.state.in_flight.count == 0  # the slot was given back


def test_unknown_format(client: TestClient, scene: np.ndarray) -> None:
    response = client.post("/v1/predict?format=gif", content=png(scene))
    assert response.status_code == 400
    assert "format must be one of json, png, overlay" in response.json()["error"]


def test_streamed_body_stops_at_the_limit() -> None:
    """A chunked body (no Content-Length) is refused at the first chunk past the limit."""
    pulled = []

    async def chunks() -> AsyncIterator[bytes]:
        for k in range(100):
            pulled.append(k)
            yield b"x" * 1000

    with pytest.raises(HttpError) as refused:
        asyncio.run(read_body(chunks(), 4500))
    assert refused.value.status == 413
    assert pulled == [0, 1, 2, 3, 4]  # never read the other 95 chunks
    assert asyncio.run(read_body(chunks(), 10**6)) == b"x" * 100_000


def test_in_flight_is_a_bound_not_a_queue() -> None:
    gate = InFlight(2, retry_after_s=3)
    gate.enter()
    gate.enter()
    with pytest.raises(HttpError) as busy:
        gate.enter()
    assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "3"}
    gate.leave()
    gate.enter()  # a freed slot is reusable
    assert gate.count == 2


# --- under uvicorn: slow clients, over-concurrency ------------------------------------------


@pytest.fixture(scope="module")
def server(app: Any) -> Iterator[BackgroundServer]:
    with BackgroundServer(app, max_concurrency=MAX_CONCURRENCY) as running:
        yield running


def partial_upload(server: BackgroundServer, declared: int = 5000) -> socket.socket:
    """A connection that sends the headers and 10 bytes of a ``declared``-byte body, then idles."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"\x89PNG\r\n\x1a\n\0\0")
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Status, headers and JSON body of one HTTP/1.1 response read from a raw socket."""
    data = b""
    while True:
        try:
            more = sock.recv(65536)
        except ConnectionResetError:  # the server closed on a body it did not read
            more = b""
        data += more
        head, found, body = data.partition(b"\r\n\r\n")
        if found:
            lines = head.decode().split("\r\n")
            headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
            if len(body) >= int(headers.get("content-length", "0")):
                return int(lines[0].split()[1]), headers, json.loads(body)
        assert more, f"connection closed before a whole response: {data!r}"


def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_slow_client_does_not_hold_the_model(
    server: BackgroundServer, app: Any, scene: np.ndarray
) -> None:
    import httpx

    slow = partial_upload(server)
    try:
        wait_for(lambda: app.state.in_flight.count == 1)
        started = time.monotonic()
        fast = httpx.post(f"{server.url}/v1/predict", content=png(scene), timeout=10)
        assert fast.status_code == 200 and fast.json()["segments"]
        assert time.monotonic() - started < BODY_TIMEOUT_S  # did not wait for the slow one
        status, _, body = read_response(slow)  # the slow one runs out of time
        assert status == 408
        assert body["error"] == f"request body not received within {BODY_TIMEOUT_S:g} s"
    finally:
        slow.close()
    wait_for(lambda: app.state.in_flight.count == 0)


def test_over_concurrency_is_503_with_retry_after(
    server: BackgroundServer, app: Any, scene: np.ndarray
) -> None:
    import httpx

    holders = [partial_upload(server) for _ in range(MAX_CONCURRENCY)]
    try:
        wait_for(lambda: app.state.in_flight.count == MAX_CONCURRENCY)
        busy = httpx.post(f"{server.url}/v1/predict", content=png(scene), timeout=10)
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert f"{MAX_CONCURRENCY} requests in flight" in busy.json()["error"]
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200  # not bounded
    finally:
        for sock in holders:
            sock.close()
    wait_for(lambda: app.state.in_flight.count == 0)
    again = httpx.post(f"{server.url}/v1/predict", content=png(scene), timeout=10)
    assert again.status_code == 200


def test_oversize_stream_is_refused_without_reading_it(server: BackgroundServer) -> None:
    """A chunked upload far over the limit gets 413 while the client is still sending."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    try:
        sock.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        sent = 0
        status = None
        for _ in range(64):  # up to 4 MB, 16 x the limit
            try:
                sock.sendall(chunk)
            except OSError:
                break
            sent += 65536
            sock.settimeout(0.05)
            try:
                if sock.recv(1, socket.MSG_PEEK):
                    break
            except (TimeoutError, BlockingIOError):
                pass
            finally:
                sock.settimeout(10)
        status, _, body = read_response(sock)
        assert status == 413
        assert "over the server's limit" in body["error"]
        assert sent < 16 * MAX_UPLOAD
    finally:
        sock.close()


# --- the command ------------------------------------------------------------------------------


def test_serve_without_the_extra_says_which_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from maskconver.cli import main
    from maskconver.commands import serve

    monkeypatch.setattr(serve, "SERVE_MODULES", ("maskconver_no_such_module",))
    assert main(["serve", "--checkpoint", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "maskconver serve: error: needs the serve extra (maskconver_no_such_module is missing): "
        "pip install 'maskconver[serve]'"
    )


@pytest.mark.filterwarnings("ignore:.*trained on the synthetic shapes dataset only")
def test_serve_command_loads_and_binds_loopback(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    predictor: Predictor,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import uvicorn

    from maskconver.cli import main
    from maskconver.commands import serve
    from maskconver.engine.checkpoint import save_checkpoint

    module: Any = predictor.model
    checkpoint = save_checkpoint(
        tmp_path / "checkpoints",
        model=module.module,
        ema=None,
        optimizer=None,
        step=1,
        config=predictor.cfg,
        categories=predictor.categories,
        num_classes=resolve_num_classes(predictor.cfg, predictor.categories),
    )
    ran: list[Any] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: ran.append(self.config))
    assert main(["serve", "--checkpoint", str(checkpoint), "--max-concurrency", "3"]) == 0
    config = ran[0]
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    assert config.limit_concurrency == 13 and config.timeout_keep_alive == 5
    assert "http://127.0.0.1:8000/" in capsys.readouterr().out
    assert serve.model_name(str(checkpoint)) == f"{tmp_path.name}/step_000001"
    assert main(["serve", "--checkpoint", str(checkpoint), "--port", "70000"]) == 2
    assert "--port must be in 0..65535, got 70000" in capsys.readouterr().err
    assert main(["serve", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
