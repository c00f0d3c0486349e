"""Which datasets a run uses: COCO-format panoptic data under a root, or the synthetic scenes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from maskconver.config import Config, ConfigError
from maskconver.data.types import CategorySet

Split = Literal["train", "val"]


def build_dataset(cfg: Config, split: Split, data_root: str | None = None) -> Any:
    """The ``split`` dataset of a run (``.categories`` holds its ``CategorySet``).

    Args:
        cfg: the run config (``data`` section and ``model.label_space``).
        split: ``"train"`` or ``"val"``.
        data_root: COCO panoptic root; overrides ``cfg.data.root``. None (and no ``cfg.data.root``)
            means the synthetic dataset: ``data.synthetic_train`` / ``synthetic_val`` images, the
            validation images from an independent sample stream of the same seed.

    Raises:
        ConfigError: a bad split name. ``DatasetError`` names missing files; a split missing
            from the root also names the splits there and the ``--set data.<split>_split``.
    """
    if split not in ("train", "val"):
        raise ConfigError(f"unknown split {split!r} (expected 'train' or 'val')")
    from maskconver.tasks.instance import build_instance_dataset, is_instance_task

    if is_instance_task(cfg):  # COCO instance JSON / things-only synthetic scenes
        return build_instance_dataset(cfg, split, data_root)
    d = cfg.data
    root = data_root if data_root is not None else d.root
    label_space = cfg.model.label_space
    if root is None:
        from maskconver.data.synthetic import TRAIN_STREAM, VAL_STREAM, SyntheticPanoptic

        return SyntheticPanoptic(
            d.synthetic_train if split == "train" else d.synthetic_val,
            seed=d.synthetic_seed,
            min_size=d.synthetic_min_size,
            max_size=d.synthetic_max_size,
            stream=TRAIN_STREAM if split == "train" else VAL_STREAM,
            label_space=label_space,
        )
    from maskconver.data.coco_panoptic import CocoPanopticDataset

    name = d.train_split if split == "train" else d.val_split
    check_split_present(root, name, key=f"data.{split}_split")
    return CocoPanopticDataset(root, name, label_space=label_space)


def check_data_splits(cfg: Config) -> None:
    """``check_split_present`` of both splits of ``cfg.data.root`` (synthetic data passes).

    ``train`` calls it before it writes anything, so a refused run leaves no folder behind.
    """
    from maskconver.tasks.instance import check_instance_splits, is_instance_task

    if is_instance_task(cfg):
        return check_instance_splits(cfg)
    d = cfg.data
    if d.root is not None:
        check_split_present(d.root, d.train_split, key="data.train_split")
        check_split_present(d.root, d.val_split, key="data.val_split")


def check_split_present(root: str | Path, name: str, *, key: str) -> None:
    """Refuse a root without split ``name`` with the splits it has and how to choose one.

    Args:
        root: the COCO panoptic root.
        name: the split's name, e.g. ``"val2017"``.
        key: the config key that chose it (``data.val_split``), named in the hint.

    Raises:
        DatasetError: the root is not a folder, or the split's image folder, panoptic JSON or
            PNG folder is missing (the message lists the ``panoptic_*.json`` splits found).
    """
    from maskconver.data.coco_panoptic import DatasetError, available_splits, standard_paths

    if not Path(root).is_dir():
        raise DatasetError(f"data root is not a folder: {root}")
    image_dir, json_path, png_dir = standard_paths(root, name)
    missing = [
        f"{path}/" if path != json_path else str(path)
        for path in (image_dir, json_path, png_dir)
        if not path.exists()
    ]
    if not missing:
        return
    annotations = Path(root) / "annotations"
    found = available_splits(root)
    have = (
        f"the splits in {annotations} (panoptic_*.json) are {', '.join(found)}"
        if found
        else f"{annotations} holds no panoptic_*.json"
    )
    raise DatasetError(
        f"split {name!r} ({key}) not found under {root}: missing {', '.join(missing)}; {have}; "
        f"choose the split with --set {key}=NAME"
    )


def check_same_categories(train: CategorySet, val: CategorySet) -> None:
    """Raise ``ConfigError`` when the train and val splits disagree on their categories."""
    train_ids = [c.id for c in train.categories]
    val_ids = [c.id for c in val.categories]
    if train_ids != val_ids:
        raise ConfigError(
            f"train and val splits have different categories: train ids {train_ids}, "
            f"val ids {val_ids}"
        )


def check_split(
    dataset: Any, split: str, *, skip_bad: bool, log: Callable[[str], None] = print
) -> int:
    """Check a split's files before step 1: existence, and the val split's images decoded.

    A dataset without ``check_files`` (the synthetic scenes) passes. Decoding the validation
    images (``Image.load``, bounded by Pillow's pixel limit) catches a truncated JPEG before
    training rather than at the first evaluation.

    Returns:
        The number of bad samples (only with ``skip_bad``; they are skipped and counted).

    Raises:
        DatasetError: an empty split (or one whose every sample is bad), or a bad sample and
            not ``skip_bad`` (names the file and image id).
    """
    from maskconver.data.coco_panoptic import DatasetError

    where = getattr(dataset, "json_path", None)
    if len(dataset) == 0:
        raise DatasetError(f"{split} split has no images" + (f" ({where})" if where else ""))
    check = getattr(dataset, "check_files", None)
    if check is None:
        return 0
    problems: list[str] = check(headers=split != "train")  # decode the val split's images
    if not problems:
        return 0
    if not skip_bad:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DatasetError(
            f"{split} split: {problems[0]}{more}; fix the files or set data.skip_bad_samples=true"
        )
    if len(problems) >= len(dataset):
        raise DatasetError(
            f"{split} split: every one of its {len(dataset)} sample(s) is bad, e.g. {problems[0]}"
        )
    log(
        f"warning: {split} split: {len(problems)} bad sample(s) will be skipped, e.g. {problems[0]}"
    )
    return len(problems)
