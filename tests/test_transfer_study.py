"""tools/transfer_study.py report writers on a small fake result set (the study itself is too
long for the suite: it is run by hand)."""

import json

import matplotlib.image
import pytest


@pytest.fixture(scope="module")
def study(load_tool):
    return load_tool("transfer_study")


def _summary(soprano, rest):
    return {
        "soprano": {"mean": soprano, "median": soprano, "n": 10},
        "accompaniment": {"mean": rest, "median": rest, "n": 10},
        "overall": {"mean": (soprano + rest) / 2, "median": (soprano + rest) / 2, "n": 10},
    }


def _comparison(difference, p_value):
    stats = {"mean_difference": difference, "p_value": p_value, "effect_size": 0.5, "n": 10}
    return {"soprano": stats, "accompaniment": stats, "overall": stats}


def fake_results():
    curve = {"steps": [10, 20, 30], "loss": [0.01, 0.008, 0.007], "mi": [1e-3, 8e-4, 7e-4]}
    return {
        "scale": "tiny",
        "domains": ["chorale"],
        "variants": ["plain", "incoherent"],
        "num_excerpts": 10,
        "scores": {
            "chorale": {
                "scratch": _summary(1.0, 3.0),
                "plain/whole": _summary(2.5, 4.0),
                "plain/mask": _summary(0.5, 2.0),
                "incoherent/whole": _summary(2.0, 3.5),
            }
        },
        "comparisons": {
            "chorale": {
                "plain/whole": _comparison(1.25, 1e-5),
                "plain/mask": _comparison(-0.75, 0.9),
                "incoherent/whole": _comparison(0.75, 0.02),
            }
        },
        "curves": {
            "pretrain": {"plain": curve},
            "chorale": {"scratch": curve, "plain/whole": {**curve, "offset": 100}},
        },
        "wall_seconds": 12.0,
    }


def test_table_has_paper_layout_and_marks_only_significant_cells(study):
    table = study.table_markdown(fake_results())
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| pre-training"))
    assert header == "| pre-training | chorale whole | chorale mask |"
    plain = next(line for line in lines if line.startswith("| plain |"))
    assert "+1.25* (p=1e-05)" in plain and "-0.75 (p=0.9)" in plain
    incoherent = next(line for line in lines if line.startswith("| incoherent |"))
    assert "+0.75 (p=0.02)" in incoherent and "*" not in incoherent
    assert incoherent.rstrip().endswith("| - |")  # a missing run is a dash, not an error
    assert "| scratch (absolute dB) | 2.00 | 2.00 |" in lines
    assert "| plain/whole | 2.50 | 4.00 | 3.25 |" in lines


def test_write_report_writes_json_table_and_pngs(study, tmp_path):
    written = study.write_report(fake_results(), tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["curves_chorale.png", "curves_pretrain.png", "results.json", "table.md"]
    assert json.loads((tmp_path / "results.json").read_text())["variants"] == [
        "plain",
        "incoherent",
    ]
    image = matplotlib.image.imread(tmp_path / "curves_chorale.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_eval_curve_reads_eval_records_only(study, tmp_path):
    records = [
        {"step": 10, "split": "train", "loss": 5.0},
        {"step": 10, "split": "eval", "loss": 1.0, "mi": 0.1},
        {"step": 20, "split": "eval", "loss": 0.7, "mi": 0.09},
        {"step": 20, "split": "eval", "loss": 0.5, "mi": 0.05},  # a resumed run logs it again
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    curve = study.eval_curve(tmp_path)
    assert curve == {"steps": [10, 20], "loss": [1.0, 0.5], "mi": [0.1, 0.05]}


def test_bad_variant_exits_two(study, tmp_path, capsys):
    assert study.main(["--scale", "tiny", "--out", str(tmp_path), "--variants", "plain,huge"]) == 2
    assert "huge" in capsys.readouterr().err
