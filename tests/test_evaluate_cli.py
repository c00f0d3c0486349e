"""``maskconver evaluate`` in files mode: table, metrics JSON, mode validation, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pq import STUFF, THINGS, write_random_set

from maskconver import cli

EXIT_BAD_INPUT = 2


@pytest.fixture(autouse=True)
def _only_evaluate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register just this command, so the test does not depend on the other commands."""
    monkeypatch.setattr(cli, "COMMANDS", {"evaluate": "evaluate"})


def _files_args(paths: tuple[Path, Path, Path, Path]) -> list[str]:
    gt_json, gt_dir, pred_json, pred_dir = paths
    return [
        "evaluate",
        "--gt-json",
        str(gt_json),
        "--gt-dir",
        str(gt_dir),
        "--pred-json",
        str(pred_json),
        "--pred-dir",
        str(pred_dir),
    ]


def test_files_mode_prints_table_and_writes_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_random_set(tmp_path / "set", seed=11, num_images=3)
    out = tmp_path / "out" / "metrics.json"
    assert cli.main([*_files_args(paths), "--output", str(out)]) == 0
    metrics = json.loads(out.read_text())
    # PQ in panopticapi's layout, plus semantic mIoU and mask AP (all metrics by default)
    assert set(metrics) == {"all", "things", "stuff", "per_class", "semantic", "mask_ap"}
    for split in ("all", "things", "stuff"):
        assert set(metrics[split]) == {"pq", "sq", "rq", "n"}
        assert all(0.0 <= metrics[split][m] <= 1.0 for m in ("pq", "sq", "rq"))
    assert metrics["all"]["n"] == metrics["things"]["n"] + metrics["stuff"]["n"] > 0
    # every gt category is listed, keyed by its id as a string, with its name and counts
    assert set(metrics["per_class"]) == {str(k) for k in (*THINGS, *STUFF)}
    for cid, c in metrics["per_class"].items():
        assert {"name", "pq", "sq", "rq", "tp", "fp", "fn", "iou"} <= set(c)
        assert c["name"] == {**THINGS, **STUFF}[int(cid)]
        assert 0.0 <= c["pq"] <= c["sq"] <= 1.0 and min(c["tp"], c["fp"], c["fn"]) >= 0
    printed = capsys.readouterr().out
    assert "Things" in printed and f"{metrics['all']['pq'] * 100:.2f}" in printed


def test_missing_png_is_one_clear_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_random_set(tmp_path, seed=12, num_images=2)
    victim = sorted(paths[3].glob("*.png"))[0]
    victim.unlink()
    assert cli.main(_files_args(paths)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(victim) in err and "\n" not in err


@pytest.mark.parametrize("defect", ["missing", "malformed"])
def test_bad_json_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], defect: str) -> None:
    paths = write_random_set(tmp_path, seed=13, num_images=1)
    if defect == "missing":
        paths[2].unlink()
    else:
        paths[2].write_text("{not json")
    assert cli.main(_files_args(paths)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    expected = "not found" if defect == "missing" else "not valid JSON"
    assert err.startswith("error:") and str(paths[2]) in err and expected in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give either files mode"),
        (["--gt-json", "a.json", "--gt-dir", "d"], "files mode also needs --pred-json --pred-dir"),
        (["--checkpoint", "c"], "model mode also needs --data-root"),
        (["--gt-json", "a", "--checkpoint", "c"], "choose one mode"),
    ],
)
def test_mode_validation_is_an_argparse_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", *argv])
    assert info.value.code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_model_mode_calls_the_engine_with_the_parsed_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from maskconver.commands import evaluate as engine

    seen = {}

    def fake(args: object) -> int:
        seen["args"] = args
        return 0

    monkeypatch.setattr(engine, "evaluate_checkpoint", fake)
    argv = [
        "evaluate",
        "--checkpoint",
        "ckpt",
        "--data-root",
        "data",
        "--max-images",
        "3",
        "--batch-size",
        "2",
        "--output",
        "m.json",
    ]
    assert cli.main(argv) == 0
    args = seen["args"]
    assert (args.checkpoint, args.data_root, args.max_images, args.batch_size, args.output) == (
        "ckpt",
        "data",
        3,
        2,
        "m.json",
    )
    assert args.split is None and args.save_predictions is None  # engine defaults apply
