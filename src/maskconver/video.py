"""Video in, video out: PyAV decoding, the codec mapping, and ``predict`` over a clip's frames.

``maskconver predict --input clip.mp4 --output DIR`` decodes the clip with PyAV (the ``video``
extra), predicts its frames in batches and writes into ``DIR``:

* ``<stem>_overlay<suffix>`` (unless ``--no-overlay``): the overlaid frames, encoded with the
  input's codec family (``ENCODERS``: h264 -> libx264, hevc -> libx265, vp9 -> libvpx-vp9,
  mpeg4 -> mpeg4, ...) in the input's container; where that encoder is missing from this FFmpeg
  build, ``FALLBACK_ENCODERS`` (mpeg4, or vp8 for ``.webm``) with a one-line note on stderr;
* ``<stem>_frames/<frame:06d>.png`` (``--frames-png``): COCO panoptic id PNGs, one per frame;
* ``<stem>.jsonl`` (``--jsonl``): one JSON line per predicted frame (``frame`` index in the
  decoded stream, ``pts``, ``time`` in seconds, ``width``, ``height``, ``segments`` with ``id``,
  ``category_id``, ``iscrowd``, ``isthing``, ``score``, ``area``, ``bbox`` [x, y, w, h]).

``--every N`` predicts every N-th decoded frame (the output video then plays at rate / N) and
``--max-frames N`` stops after N predicted frames. A file PyAV cannot open or decode is a
``VideoError`` naming it (one line, exit code 2).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from maskconver.errors import MaskconverError

if TYPE_CHECKING:
    import numpy as np

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm")
INSTALL_HINT = "pip install 'maskconver[video]'"
# decoder codec name -> encoders of the same family, preferred first
ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264", "h264"),
    "hevc": ("libx265", "hevc"),
    "mpeg4": ("mpeg4",),
    "vp9": ("libvpx-vp9", "vp9"),
    "vp8": ("libvpx", "vp8"),
    "av1": ("libsvtav1", "libaom-av1", "av1"),
    "mjpeg": ("mjpeg",),
}
# container suffix -> encoders to fall back to (first one this FFmpeg build has)
FALLBACK_ENCODERS: dict[str, tuple[str, ...]] = {".webm": ("libvpx", "libvpx-vp9")}
DEFAULT_FALLBACK = ("mpeg4", "libx264")
DEFAULT_RATE = Fraction(25)  # frames/s when the stream does not say
MPEG4_BITS_PER_PIXEL = 0.25  # mpeg4's default 200 kb/s blurs the overlay labels
# x264 / x265's default "medium" preset encoded 640x360 at 15 frames/s on a shared 2-core CPU,
# slower than the tiny network; "veryfast" keeps the encoder off the critical path
ENCODER_OPTIONS = {"libx264": {"preset": "veryfast"}, "libx265": {"preset": "veryfast"}}
PIXEL_FORMATS = {"mjpeg": "yuvj420p"}
DEFAULT_PIXEL_FORMAT = "yuv420p"
PREFETCH_DEPTH = 8  # decoded frames read ahead / waiting to be written
FRAME_DIGITS = 6

T = TypeVar("T")


class VideoError(MaskconverError, ValueError):
    """A video that cannot be read or written (the message names the file)."""


def is_video(path: Path) -> bool:
    """Whether ``path`` names a video file by its suffix (``VIDEO_SUFFIXES``)."""
    return path.suffix.lower() in VIDEO_SUFFIXES


def require_av() -> ModuleType:
    """The ``av`` module, or a ``MaskconverError`` that names the extra to install."""
    try:
        import av
    except ImportError:
        raise MaskconverError(f"video input needs PyAV: {INSTALL_HINT}") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """What the first video stream of a file declares.

    Attributes:
        codec: the decoder's codec name (``h264``, ``mpeg4``, ``vp9``...).
        width: frame width in pixels.
        height: frame height in pixels.
        rate: frames per second (``DEFAULT_RATE`` when the file does not say).
        frames: the declared frame count (0 when unknown).
    """

    codec: str
    width: int
    height: int
    rate: Fraction
    frames: int


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame.

    Attributes:
        index: its position among the decoded frames (0-based, counting skipped ones).
        pts: its presentation timestamp in stream time-base units (None if absent).
        time: its presentation time in seconds (None if absent).
        image: ``[H, W, 3]`` uint8 RGB.
    """

    index: int
    pts: int | None
    time: float | None
    image: np.ndarray


def _video_error(path: Path, error: BaseException) -> VideoError:
    return VideoError(f"cannot read video {path}: {' '.join(str(error).split())}")


def probe(path: Path) -> VideoInfo:
    """The first video stream's codec, size, rate and declared frame count.

    Raises:
        VideoError: the file cannot be opened or has no video stream.
    """
    av = require_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"cannot read video {path}: it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or DEFAULT_RATE
            return VideoInfo(
                codec=str(stream.codec_context.name),
                width=int(stream.codec_context.width),
                height=int(stream.codec_context.height),
                rate=Fraction(rate),
                frames=int(stream.frames or 0),
            )
    except (av.FFmpegError, OSError) as e:
        raise _video_error(path, e) from e


def read_frames(
    path: Path, *, every: int = 1, max_frames: int | None = None
) -> Iterator[VideoFrame]:
    """Decode the first video stream, yielding every ``every``-th frame as RGB.

    Args:
        path: the video file.
        every: keep frames whose decoded index is a multiple of this.
        max_frames: stop after this many kept frames (None: all).

    Raises:
        VideoError: the file cannot be opened or decoded (also part-way through).
    """
    av = require_av()
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    kept = 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"cannot read video {path}: it has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if max_frames is not None and kept >= max_frames:
                    return
                if index % every:
                    continue
                seconds = None if frame.time is None else float(frame.time)
                image = frame.to_ndarray(format="rgb24")
                yield VideoFrame(index=index, pts=frame.pts, time=seconds, image=image)
                kept += 1
    except (av.FFmpegError, OSError) as e:
        raise _video_error(path, e) from e


def expected_frames(info: VideoInfo, every: int, max_frames: int | None) -> int | None:
    """How many frames ``read_frames`` will yield by the declared count (None: unknown)."""
    if not info.frames:
        return max_frames
    count = -(-info.frames // every)
    return count if max_frames is None else min(count, max_frames)


def encoder_available(name: str) -> bool:
    """Whether this FFmpeg build (PyAV's) has encoder ``name``."""
    av = require_av()
    try:
        av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def choose_encoder(codec: str, suffix: str) -> tuple[str, str | None]:
    """The encoder for a video decoded with ``codec``, written with container ``suffix``.

    Returns:
        ``(encoder, note)``: the first available encoder of the codec's family
        (``ENCODERS``); else a fallback (``FALLBACK_ENCODERS`` / ``DEFAULT_FALLBACK``) and a
        note saying so (None when the family was kept).
    """
    for name in ENCODERS.get(codec, ()):
        if encoder_available(name):
            return name, None
    for name in FALLBACK_ENCODERS.get(suffix.lower(), DEFAULT_FALLBACK):
        if encoder_available(name):
            why = "has no encoder" if codec in ENCODERS else "is not a codec maskconver encodes"
            return name, f"note: {codec} {why} in this PyAV build; writing {name} instead"
    raise VideoError(f"no video encoder for {codec} (or a fallback) in this PyAV build")


class VideoWriter:
    """Encode RGB frames into a video file (a context manager; ``close`` flushes).

    Odd widths / heights are padded by one edge row / column (4:2:0 needs even sizes).

    Args:
        path: the output file; its suffix picks the container.
        encoder: an FFmpeg encoder name (``choose_encoder``).
        rate: frames per second.
        width: frame width of the frames to come.
        height: frame height of the frames to come.
    """

    def __init__(
        self, path: Path, *, encoder: str, rate: Fraction, width: int, height: int
    ) -> None:
        av = require_av()
        self.path = path
        self.width, self.height = width + width % 2, height + height % 2
        try:
            self._container = av.open(str(path), mode="w")
            self._stream = self._container.add_stream(encoder, rate=rate)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"cannot write video {path} with {encoder}: {e}") from e
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = PIXEL_FORMATS.get(encoder, DEFAULT_PIXEL_FORMAT)
        self._stream.options = dict(ENCODER_OPTIONS.get(encoder, {}))
        if encoder == "mpeg4":
            self._stream.bit_rate = int(self.width * self.height * rate * MPEG4_BITS_PER_PIXEL)
        self._frame_type = av.VideoFrame
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        """Encode one ``[H, W, 3]`` uint8 RGB frame (its size as given to the constructor)."""
        import numpy as np

        pad_h, pad_w = self.height - image.shape[0], self.width - image.shape[1]
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        frame = self._frame_type.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and close the file (idempotent)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class VideoOutputs:
    """The files ``predict_video`` writes for one clip (None: not requested).

    Attributes:
        video: the overlaid video.
        frames: the folder of per-frame panoptic PNGs.
        jsonl: the JSON-lines file of per-frame segments.
    """

    video: Path | None
    frames: Path | None
    jsonl: Path | None

    @classmethod
    def plan(
        cls, output: Path, stem: str, suffix: str, *, overlay: bool, frames_png: bool, jsonl: bool
    ) -> VideoOutputs:
        """``<stem>_overlay<suffix>``, ``<stem>_frames/`` and ``<stem>.jsonl`` in ``output``."""
        return cls(
            video=output / f"{stem}_overlay{suffix.lower()}" if overlay else None,
            frames=output / f"{stem}_frames" if frames_png else None,
            jsonl=output / f"{stem}.jsonl" if jsonl else None,
        )

    def paths(self) -> list[Path]:
        """The requested files and folders."""
        return [p for p in (self.video, self.frames, self.jsonl) if p is not None]


def frame_record(frame: VideoFrame, prediction: Any) -> dict[str, Any]:
    """One ``--jsonl`` line: the frame's index, time and segments (with ``bbox`` [x, y, w, h])."""
    from maskconver.data.writer import segment_bbox

    panoptic = prediction.panoptic
    height, width = panoptic.shape
    return {
        "frame": frame.index,
        "pts": frame.pts,
        "time": frame.time,
        "width": int(width),
        "height": int(height),
        "segments": [
            {
                "id": int(s.id),
                "category_id": int(s.category_id),
                "iscrowd": int(s.iscrowd),
                "isthing": bool(s.isthing),
                "score": float(s.score),
                "area": int(s.area),
                "bbox": segment_bbox(panoptic == s.id),
            }
            for s in prediction.segments
        ],
    }


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_video(
    predictor: Any,
    source: Path,
    outputs: VideoOutputs,
    *,
    batch_size: int,
    every: int = 1,
    max_frames: int | None = None,
    prefetch_frames: bool = True,
) -> int:
    """Predict a clip's frames in batches and write ``outputs``; returns the frames predicted.

    Decoding and the eval transform run on a read-ahead thread and the writing (overlay,
    encoding, PNGs, JSON lines) on a write-behind thread, beside the network; the progress bar
    shows frames/s and the rate is printed at the end.

    Args:
        predictor: a ``maskconver.predictor.Predictor``.
        source: the video file.
        outputs: what to write (``VideoOutputs.plan``).
        batch_size: frames per forward.
        every: predict every ``every``-th decoded frame.
        max_frames: stop after this many predicted frames (None: all).
        prefetch_frames: decode and write on background threads.

    Raises:
        VideoError: the clip cannot be decoded, or the overlay video cannot be written.
    """
    from tqdm import tqdm

    from maskconver.commands.pipeline import WriteBehind, prefetch
    from maskconver.data.panoptic_png import write_panoptic_png
    from maskconver.inference import predict_samples
    from maskconver.visualize import overlay

    info = probe(source)
    writer: VideoWriter | None = None
    if outputs.video is not None:
        encoder, note = choose_encoder(info.codec, outputs.video.suffix)
        if note:
            print(f"{source}: {note}", file=sys.stderr)
        rate = info.rate / every
        writer = VideoWriter(
            outputs.video, encoder=encoder, rate=rate, width=info.width, height=info.height
        )
    if outputs.frames is not None:
        outputs.frames.mkdir(parents=True, exist_ok=True)
    lines = outputs.jsonl.open("w", encoding="utf-8") if outputs.jsonl is not None else None

    def write(frame: VideoFrame, prediction: Any) -> None:
        if writer is not None:
            picture = overlay(
                frame.image, prediction.panoptic, prediction.segments, predictor.categories
            )
            writer.write(picture)
        if outputs.frames is not None:
            name = f"{frame.index:0{FRAME_DIGITS}d}.png"
            write_panoptic_png(outputs.frames / name, prediction.panoptic)
        if lines is not None:
            lines.write(json.dumps(frame_record(frame, prediction)) + "\n")

    def load(frame: VideoFrame) -> tuple[VideoFrame, Any]:
        return frame, predictor.prepare(frame.image)  # the eval transform, on the read-ahead thread

    depth = max(PREFETCH_DEPTH, 2 * batch_size) if prefetch_frames else 0
    total = expected_frames(info, every, max_frames)
    bar = tqdm(total=total, desc=source.name, unit="frame", dynamic_ncols=True, disable=None)
    behind = WriteBehind(depth)
    done, start = 0, time.perf_counter()
    try:
        decoded = prefetch(
            read_frames(source, every=every, max_frames=max_frames), load, depth=depth
        )
        for batch in _chunks(decoded, batch_size):
            samples = [sample for _, sample in batch]
            predictions = predict_samples(predictor.model, predictor.postprocessor, samples)
            for (frame, _), prediction in zip(batch, predictions, strict=True):
                behind.submit(functools.partial(write, frame, prediction))
            done += len(batch)
            bar.update(len(batch))
        behind.close()
    finally:
        bar.close()
        try:
            behind.close()
        finally:
            if writer is not None:
                writer.close()
            if lines is not None:
                lines.close()
    seconds = time.perf_counter() - start
    if done:
        print(f"{source.name}: {done / seconds:.2f} frames/s ({done} in {seconds:.1f} s)")
    return done
