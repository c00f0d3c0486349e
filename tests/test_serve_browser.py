"""The page at ``/`` in a real browser: upload a scene, the overlay, the table, hover, opacity.

Chromium (Debian's ``chromium`` + ``chromium-driver``) runs headless under selenium against the
app served by uvicorn on a free loopback port. The table must list exactly the segments the JSON
API returns for the same file. ``MASKCONVER_SCREENSHOT=<path.png>`` saves a screenshot there
(docs/images/serve.png was made so, with ``MASKCONVER_SERVE_CHECKPOINT`` naming a trained tiny
checkpoint; without it the model is the random tiny one of tests/test_serve.py).
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("httpx", reason="the serve extra is not installed: pip install '.[serve]'")
pytest.importorskip("selenium", reason="selenium is not installed: pip install '.[browser]'")

import httpx  # noqa: E402
from PIL import Image  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from maskconver.data.panoptic_png import rgb2id  # noqa: E402
from maskconver.data.synthetic import SyntheticPanoptic  # noqa: E402
from maskconver.predictor import Predictor  # noqa: E402
from maskconver.serve.app import create_app  # noqa: E402
from maskconver.serve.server import BackgroundServer  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_S = 60
SCENE_SIZE = 320
WINDOW = (1400, 900)


def make_predictor() -> Predictor:
    checkpoint = os.environ.get("MASKCONVER_SERVE_CHECKPOINT")
    if checkpoint:
        return Predictor.from_checkpoint(checkpoint)
    from test_serve import tiny_predictor

    return tiny_predictor()


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    app = create_app(make_predictor(), name="tiny")
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromedriver are needed: apt-get install chromium chromium-driver"
        )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def scene_file(directory: Path) -> Path:
    sample = SyntheticPanoptic(1, seed=3, min_size=SCENE_SIZE, max_size=SCENE_SIZE)[0]
    path = directory / "scene.png"
    Image.fromarray(sample.image).save(path)
    return path


def canvas_alpha(driver: Any, x: int, y: int) -> int:
    return int(
        driver.execute_script(
            "return document.getElementById('overlay').getContext('2d')"
            ".getImageData(arguments[0], arguments[1], 1, 1).data[3];",
            x,
            y,
        )
    )


def test_page_shows_the_prediction(browser: Any, server: BackgroundServer, tmp_path: Path) -> None:
    path = scene_file(tmp_path)
    data = path.read_bytes()
    api = httpx.post(f"{server.url}/v1/predict", content=data, timeout=WAIT_S).json()
    png = httpx.post(f"{server.url}/v1/predict?format=png", content=data, timeout=WAIT_S)
    ids = rgb2id(np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB")))

    browser.get(f"{server.url}/")
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda d: "categories" in d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "file").send_keys(str(path))
    wait.until(lambda d: d.find_element(By.ID, "overlay").get_attribute("data-ready") == "1")

    # the table lists exactly the API's segments, in id order
    rows = browser.find_elements(By.CSS_SELECTOR, "#segments tbody tr")
    table = [[td.text.strip() for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert table == [
        [
            str(s["id"]),
            s["category"],
            "thing" if s["isthing"] else "stuff",
            f"{s['score']:.3f}",
            str(s["area"]),
            ", ".join(map(str, s["bbox"])),
        ]
        for s in api["segments"]
    ]
    legend = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#legend li")]
    assert sorted(legend) == sorted({s["category"] for s in api["segments"]})
    assert "model" in browser.find_element(By.ID, "latency").text
    assert f"{len(api['segments'])} segments" in browser.find_element(By.ID, "status").text

    # the overlay's alpha follows the opacity slider (no segment highlighted)
    things = [s for s in api["segments"] if s["isthing"]]
    biggest = max(things or api["segments"], key=lambda s: s["area"])
    ys, xs = np.nonzero(ids == biggest["id"])
    k = len(ys) // 2
    x, y = int(xs[k]), int(ys[k])
    browser.execute_script(
        "const s = document.getElementById('opacity'); s.value = 40;"
        "s.dispatchEvent(new Event('input'));"
    )
    if canvas_alpha(browser, x, y) != 255:  # a boundary pixel stays opaque white
        assert canvas_alpha(browser, x, y) == round(0.40 * 255)

    # hovering a table row highlights it; hovering the image highlights the segment's row
    ActionChains(browser).move_to_element(rows[0]).perform()
    wait.until(lambda d: "active" in (rows[0].get_attribute("class") or ""))
    assert api["segments"][0]["category"] in browser.find_element(By.ID, "hover").text
    canvas = browser.find_element(By.ID, "overlay")
    scale = canvas.size["width"] / api["width"]
    ActionChains(browser).move_to_element_with_offset(
        canvas,
        int((x + 0.5) * scale - canvas.size["width"] / 2),
        int((y + 0.5) * scale - canvas.size["height"] / 2),
    ).perform()
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-segment-id='{biggest['id']}']")
    wait.until(lambda d: "active" in (row.get_attribute("class") or ""))
    time.sleep(0.2)  # let the highlight paint before the screenshot
    shot = tmp_path / "serve.png"
    browser.save_screenshot(str(shot))
    assert Image.open(shot).size[0] > 0
    target = os.environ.get("MASKCONVER_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
