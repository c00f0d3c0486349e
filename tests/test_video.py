"""``predict`` on a video (PyAV): codec family kept, frame counts, ``--every`` / ``--max-frames``,
the JSON lines equal per-image predictions of the same decoded frames, errors on one line.

The clip is written by the test: 6 synthetic scenes of 64 x 48 px at 10 frames/s. The model is an
untrained tiny checkpoint with its merge opened up (every threshold 0).
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import save_untrained_tiny
from PIL import Image

av = pytest.importorskip("av", reason="video prediction needs PyAV (the video extra)")

from maskconver.cli import main  # noqa: E402
from maskconver.data.panoptic_png import read_panoptic_png  # noqa: E402
from maskconver.data.synthetic import SyntheticPanoptic  # noqa: E402
from maskconver.predictor import Predictor  # noqa: E402
from maskconver.video import choose_encoder, probe, read_frames  # noqa: E402

FRAMES, WIDTH, HEIGHT, RATE = 6, 64, 48, 10
BATCH = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny checkpoint (64 px eval size, opened-up merge)."""
    return save_untrained_tiny(tmp_path_factory.mktemp("ckpt"))


def write_clip(path: Path, encoder: str) -> Path:
    source = SyntheticPanoptic(FRAMES, seed=0, min_size=64, max_size=64)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(FRAMES):
            image = np.ascontiguousarray(source[i].image[:HEIGHT, :WIDTH])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", "mpeg4")


def predict(checkpoint: Path, clip: Path, out: Path, *extra: str) -> int:
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(clip), "--output", str(out)]
    return main([*argv, "--batch-size", str(BATCH), "--threads", "1", *extra])


def decoded(path: Path) -> tuple[str, int, Fraction]:
    """(codec, frame count, average rate) of a written video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream))
        return stream.codec_context.name, count, Fraction(stream.average_rate)


@pytest.mark.parametrize(("encoder", "codec"), [("mpeg4", "mpeg4"), ("libx264", "h264")])
def test_overlay_video_keeps_the_codec_and_every_frame(
    checkpoint: Path, tmp_path: Path, encoder: str, codec: str
) -> None:
    clip = write_clip(tmp_path / "in.mp4", encoder)
    assert probe(clip).codec == codec
    assert predict(checkpoint, clip, tmp_path / "out") == 0
    assert decoded(tmp_path / "out" / "in_overlay.mp4") == (codec, FRAMES, Fraction(RATE))


def test_every_and_max_frames_pick_frames(checkpoint: Path, clip: Path, tmp_path: Path) -> None:
    cases = {
        ("--every", "2"): [0, 2, 4],
        ("--max-frames", "2"): [0, 1],
        ("--every", "4", "--max-frames", "1"): [0],
    }
    for k, (flags, frames) in enumerate(cases.items()):
        out = tmp_path / f"out{k}"
        assert predict(checkpoint, clip, out, "--jsonl", *flags) == 0
        lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
        assert [line["frame"] for line in lines] == frames
        every = int(flags[1]) if flags[0] == "--every" else 1
        assert decoded(out / "clip_overlay.mp4") == ("mpeg4", len(frames), Fraction(RATE, every))


def test_jsonl_and_pngs_equal_per_image_predictions(
    checkpoint: Path, clip: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert predict(checkpoint, clip, out, "--jsonl", "--frames-png", "--no-overlay") == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.jsonl", "clip_frames"]
    frames = list(read_frames(clip))
    expected = Predictor.from_checkpoint(checkpoint).predict_batch(
        [f.image for f in frames], batch_size=BATCH
    )
    lines = [json.loads(line) for line in (out / "clip.jsonl").read_text().splitlines()]
    assert len(lines) == FRAMES
    assert any(line["segments"] for line in lines), "an opened-up merge predicts segments"
    for frame, line, pred in zip(frames, lines, expected, strict=True):
        assert (line["frame"], line["pts"], line["time"]) == (frame.index, frame.pts, frame.time)
        assert line["time"] == pytest.approx(frame.index / RATE)
        assert (line["width"], line["height"]) == (WIDTH, HEIGHT)
        got = [(s["id"], s["category_id"], s["score"], s["area"]) for s in line["segments"]]
        assert got == [(s.id, s.category_id, s.score, s.area) for s in pred.segments]
        png = read_panoptic_png(out / "clip_frames" / f"{frame.index:06d}.png")
        assert np.array_equal(png, pred.panoptic)


def test_existing_outputs_are_refused_unless_overwrite(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert predict(checkpoint, clip, out, "--max-frames", "1") == 0
    assert predict(checkpoint, clip, out, "--max-frames", "1") == 2
    assert "clip_overlay.mp4 exists" in capsys.readouterr().err
    assert predict(checkpoint, clip, out, "--max-frames", "2", "--overwrite") == 0
    assert decoded(out / "clip_overlay.mp4")[1] == 2


def test_corrupt_video_is_a_one_line_error(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, data in [("junk.mp4", b"not a video at all"), ("cut.mp4", clip.read_bytes()[:300])]:
        bad = tmp_path / name
        bad.write_bytes(data)
        assert predict(checkpoint, bad, tmp_path / f"out_{name}") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("maskconver predict: error: cannot read video") and "\n" not in err
        assert str(bad) in err
        assert not (tmp_path / f"out_{name}").exists()  # refused before anything was written


def test_without_pyav_the_error_names_the_extra(
    checkpoint: Path,
    clip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # `import av` raises ImportError
    assert predict(checkpoint, clip, tmp_path / "out") == 2
    assert "maskconver[video]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_encoder_choice_keeps_the_family_or_says_why() -> None:
    assert choose_encoder("h264", ".mp4") == ("libx264", None)
    assert choose_encoder("mpeg4", ".avi") == ("mpeg4", None)
    name, note = choose_encoder("theora", ".mkv")
    assert name == "mpeg4" and note is not None and "theora" in note
    assert choose_encoder("theora", ".webm")[0] in ("libvpx", "libvpx-vp9")


def test_video_flags_need_videos_and_videos_need_their_own_run(
    checkpoint: Path, clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "still.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    assert predict(checkpoint, image, tmp_path / "a", "--jsonl") == 2
    assert "are for videos" in capsys.readouterr().err
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(clip), str(image)]
    assert main([*argv, "--output", str(tmp_path / "b")]) == 2
    assert "separate predict runs" in capsys.readouterr().err
