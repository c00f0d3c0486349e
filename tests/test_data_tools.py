"""``maskconver data show`` and ``data stats``: pictures per image, counts equal to the truth."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskconver.cli import main
from maskconver.data.coco_panoptic import CocoPanopticDataset, standard_paths
from maskconver.data.panoptic_png import write_panoptic_png
from maskconver.data.stats import split_stats
from maskconver.data.synthetic import TRAIN_STREAM, SyntheticPanoptic
from maskconver.data.types import Category, CategorySet
from maskconver.data.writer import write_coco_panoptic
from maskconver.visualize import overlay

PERSON, CAR, SKY = 1, 2, 3


def test_stats_on_a_hand_built_split(tmp_path: Path, make_sample) -> None:
    a = np.zeros((4, 5), np.int32)
    a[0:2, 0:3] = 5  # person, 6 px
    a[2:4, 0:2] = 9  # crowd of persons, 4 px
    a[:, 3:5] = 7  # sky, 8 px
    a[0, 4] = 0  # one void pixel in the sky column ...
    a[3, 2] = 0  # ... and one more: void = 20 - 6 - 4 - 7 = 3
    b = np.zeros((3, 3), np.int32)
    b[0, :] = 1  # person, 3 px; void 6
    cats = CategorySet(
        [Category(PERSON, "person", True), Category(CAR, "car", True), Category(SKY, "sky", False)]
    )
    samples = [
        make_sample(a, {5: PERSON, 9: PERSON, 7: SKY}, thing_categories=(PERSON,), crowd=(9,)),
        make_sample(b, {1: PERSON}, thing_categories=(PERSON,), image_id=2),
        make_sample(b, {1: PERSON}, thing_categories=(PERSON,), image_id=3),
    ]
    write_coco_panoptic(samples, tmp_path, "train2017", cats, image_format="png")
    _, json_path, png_dir = standard_paths(tmp_path, "train2017")
    write_panoptic_png(png_dir / "3.png", b * 4)  # id 4 is not in its segments_info
    stats = split_stats(json_path, png_dir, split="train2017")

    assert (stats["images"], stats["images_read"]) == (3, 2)
    assert len(stats["problems"]) == 1 and "image id 3" in stats["problems"][0]
    assert (stats["segments"], stats["instances"], stats["stuff_segments"]) == (4, 2, 1)
    assert stats["crowd"] == 1
    assert stats["pixels"] == 20 + 9
    assert stats["void_fraction"] == pytest.approx((3 + 6) / 29)
    assert stats["image_height"] == {"min": 3, "median": 3.5, "max": 4}
    assert stats["image_width"] == {"min": 3, "median": 4, "max": 5}
    assert stats["image_sizes"] == [[4, 5, 1], [3, 3, 1]]
    by_name = {c["name"]: c for c in stats["categories"]}
    person = by_name["person"]
    assert (person["segments"], person["instances"], person["crowd"], person["images"]) == (
        3,
        2,
        1,
        2,
    )
    assert person["area"] == {"min": 3, "median": 4, "max": 6}
    assert by_name["sky"]["area"] == {"min": 7, "median": 7, "max": 7}
    assert by_name["car"]["segments"] == 0 and by_name["car"]["area"] is None
    (warning,) = stats["warnings"]
    assert "'car'" in warning and "training" in warning


def test_stats_cli_json_equals_the_generator(
    synthetic_coco_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = synthetic_coco_root
    assert (
        main(["data", "stats", str(root), "--split", "train2017", "--json", "--no-progress"]) == 0
    )
    (stats,) = json.loads(capsys.readouterr().out)["splits"]
    count = len(CocoPanopticDataset(root, "train2017"))
    truth = SyntheticPanoptic(count, seed=0, stream=TRAIN_STREAM)  # what `data synth` wrote
    segments: Counter[int] = Counter()
    areas: dict[int, list[int]] = {}
    void = pixels = 0
    for k in range(count):
        sample = truth[k]
        void += int((sample.panoptic == 0).sum())
        pixels += sample.panoptic.size
        for seg in sample.segments:
            segments[seg.category_id] += 1
            areas.setdefault(seg.category_id, []).append(int((sample.panoptic == seg.id).sum()))
    assert stats["images"] == stats["images_read"] == count
    assert stats["segments"] == sum(segments.values())
    assert stats["pixels"] == pixels
    assert stats["void_fraction"] == pytest.approx(void / pixels)
    for cat in stats["categories"]:
        assert cat["segments"] == segments[cat["id"]]
        if segments[cat["id"]]:
            assert cat["area"]["max"] == max(areas[cat["id"]])
            assert cat["area"]["median"] == pytest.approx(float(np.median(areas[cat["id"]])))
    # text form: every split, one table each
    assert main(["data", "stats", str(root), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert text.count("area min / median / max") == 2 and "val2017:" in text


def test_show_writes_one_overlay_per_image(
    synthetic_coco_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pictures"
    assert main(["data", "show", str(synthetic_coco_root), "--out", str(out), "--no-progress"]) == 0
    for split in ("train2017", "val2017"):
        dataset = CocoPanopticDataset(synthetic_coco_root, split)
        pictures = sorted((out / split).glob("*.jpg"))
        assert len(pictures) == len(dataset)
        sample = dataset[0]
        picture = np.asarray(Image.open(out / split / Path(sample.file_name).with_suffix(".jpg")))
        assert picture.shape == sample.image.shape
        drawn = overlay(sample.image, sample.panoptic, sample.segments, dataset.categories)
        to_overlay = np.abs(picture.astype(int) - drawn).mean()
        to_image = np.abs(picture.astype(int) - sample.image).mean()
        assert to_overlay < 8 < to_image  # JPEG noise only, and clearly not the bare image
    assert "wrote 10 pictures" in capsys.readouterr().out

    limited = tmp_path / "two"
    args = ["data", "show", str(synthetic_coco_root), "--split", "val2017", "--limit", "2"]
    assert main([*args, "--out", str(limited), "--no-progress"]) == 0
    assert len(list((limited / "val2017").glob("*.jpg"))) == 2
    # explicit files instead of ROOT
    image_dir, json_path, png_dir = standard_paths(synthetic_coco_root, "val2017")
    files = ["--json", str(json_path), "--pngs", str(png_dir), "--images", str(image_dir)]
    assert main(["data", "show", *files, "--out", str(tmp_path / "f"), "--limit", "1"]) == 0
    assert len(list((tmp_path / "f" / "val2017").glob("*.jpg"))) == 1


def test_show_output_never_inside_the_dataset(
    synthetic_coco_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = synthetic_coco_root
    before = sorted(p.name for p in root.iterdir())
    monkeypatch.chdir(root / "annotations")  # the default would be here: it goes next to ROOT
    args = ["data", "show", str(root), "--split", "val2017", "--limit", "1", "--no-progress"]
    assert main(args) == 0
    made = Path(capsys.readouterr().out.split(" to ")[1].split()[0])
    assert made.parent == root.parent and made.name.startswith(f"show_{root.name}")
    assert len(list((made / "val2017").glob("*.jpg"))) == 1
    assert sorted(p.name for p in root.iterdir()) == before
    # an explicit --out inside the dataset, a non-empty --out: refused with one line, code 2
    assert main([*args, "--out", str(root / "pics")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "inside the dataset" in err
    assert main([*args, "--out", str(made)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "stats", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing" in err


@pytest.mark.parametrize("command,json_flag", [("show", "--json"), ("stats", "--panoptic-json")])
def test_split_source_help_names_the_commands_own_json_flag(
    command: str, json_flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--pngs`` / ``--images`` go with the JSON flag this subcommand has (stats: not --json)."""
    with pytest.raises(SystemExit):
        main(["data", command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"panoptic PNG folder (with {json_flag})" in text
    assert f"image folder (with {json_flag})" in text
