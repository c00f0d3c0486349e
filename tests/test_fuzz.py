"""Property-based fuzzing of the COCO panoptic reader and the PNG id decoding (hypothesis).

Random mutations of a valid annotation JSON, random bytes in place of the JSON, and corrupted
panoptic PNGs must either load or raise ``DatasetError`` (naming the file): never any other
exception.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from maskconver.data.coco_panoptic import CocoPanopticDataset, DatasetError  # noqa: E402
from maskconver.data.panoptic_png import decode_png_rgb  # noqa: E402
from maskconver.data.synthetic import write_synthetic_dataset  # noqa: E402

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 300)
    | st.floats(allow_nan=True)
    | st.text(max_size=4),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    write_synthetic_dataset(base, train=0, val=2, seed=0, min_size=32, max_size=40, progress=False)
    return base


def _paths(data: Any) -> list[list[Any]]:
    """Every path (list of keys/indices) into a JSON value."""
    out: list[list[Any]] = [[]]
    if isinstance(data, dict):
        for key, value in data.items():
            out += [[key, *p] for p in _paths(value)]
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += [[i, *p] for p in _paths(value)]
    return out


def _read_all(root: Path, json_path: Path) -> None:
    dataset = CocoPanopticDataset(
        image_dir=root / "val2017",
        json_path=json_path,
        png_dir=root / "annotations" / "panoptic_val2017",
    )
    for i in range(len(dataset)):
        dataset[i]


@SETTINGS
@given(data=st.data())
def test_mutated_annotation_json_loads_or_raises_dataset_error(
    root: Path, data: st.DataObject, tmp_path: Path
) -> None:
    original = json.loads((root / "annotations" / "panoptic_val2017.json").read_text())
    mutated = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(mutated)))
        if not path:
            mutated = data.draw(JSON_VALUES)
            break
        parent = mutated
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON_VALUES)
    json_path = tmp_path / "mutated.json"
    json_path.write_text(json.dumps(mutated))
    try:
        _read_all(root, json_path)
    except DatasetError as e:
        assert "mutated.json" in str(e) or "image id" in str(e)


@SETTINGS
@given(blob=st.binary(max_size=200))
def test_random_bytes_as_json_raise_dataset_error(root: Path, blob: bytes, tmp_path: Path) -> None:
    json_path = tmp_path / "random.json"
    json_path.write_bytes(blob)
    try:
        _read_all(root, json_path)
    except DatasetError as e:
        assert "random.json" in str(e)


@SETTINGS
@given(data=st.data())
def test_corrupted_panoptic_pngs_raise_dataset_error(
    root: Path, data: st.DataObject, tmp_path: Path
) -> None:
    copy_root = tmp_path / "copy"
    if copy_root.exists():
        shutil.rmtree(copy_root)
    shutil.copytree(root, copy_root)
    png = sorted((copy_root / "annotations" / "panoptic_val2017").iterdir())[0]
    raw = bytearray(png.read_bytes())
    if data.draw(st.booleans()):  # flip some bytes
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] = data.draw(st.integers(0, 255))
    else:  # truncate
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    png.write_bytes(bytes(raw))
    try:
        decode_png_rgb(png)
    except (ValueError, FileNotFoundError) as e:
        assert png.name in str(e)
    try:
        _read_all(copy_root, copy_root / "annotations" / "panoptic_val2017.json")
    except DatasetError as e:
        assert "image id" in str(e)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("color", [float("inf"), 0, 0], "must be finite numbers"),
        ("color", [0, float("nan"), 0], "must be finite numbers"),
        ("id", float("inf"), "needs an integer 'id'"),
    ],
)
def test_a_non_finite_category_id_or_color_is_a_dataset_error(
    root: Path, tmp_path: Path, field: str, value: Any, message: str
) -> None:
    """The case hypothesis found (``inf`` in a colour raised OverflowError), pinned."""
    data = json.loads((root / "annotations" / "panoptic_val2017.json").read_text())
    data["categories"][3][field] = value
    json_path = tmp_path / "bad.json"
    json_path.write_text(json.dumps(data))  # json writes Infinity, as a buggy tool would
    with pytest.raises(DatasetError, match=rf"bad\.json.*{message}"):
        _read_all(root, json_path)
