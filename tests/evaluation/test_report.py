"""RobustnessReport: markdown, atomic JSON round trip, PNG plot."""

import json
import os

import numpy as np
import pytest

from qrobust_keras.evaluation import RobustnessReport


def _report():
    return RobustnessReport(model="m", n=4, norm="inf", eps=[2 / 255, 8 / 255], attacks=["fgsm", "pgd"],
                            clean_accuracy=0.75, accuracy={"fgsm": [0.5, 0.25], "pgd": [0.5, 0.0]},
                            robust_accuracy=[0.25, 0.0], mean_norm={"fgsm": [2 / 255, None], "pgd": [None, 8 / 255]},
                            queries={"fgsm": [None, None], "pgd": [None, None]},
                            seconds={"fgsm": [0.1, 0.1], "pgd": [1.0, 1.0]}, total_seconds=2.2,
                            clean_correct=[True, True, True, False],
                            robust=[[True, False, False, False], [False] * 4], notes=["pgd: inference mode"])


def test_markdown_table():
    md = _report().to_markdown()
    assert "| attack | 2/255 | 8/255 |" in md
    assert "| fgsm | 50.0% | 25.0% |" in md
    assert "| **worst case** | **25.0%** | **0.0%** |" in md
    assert "clean accuracy 75.0%" in md and "pgd: inference mode" in md


def test_json_round_trip_is_atomic(tmp_path):
    report = _report()
    path = tmp_path / "sub" / "report.json"
    report.to_json(path)
    assert RobustnessReport.from_json(path) == report
    assert sorted(os.listdir(path.parent)) == ["report.json"]  # no temporary file left behind
    assert json.loads(path.read_text())["mean_norm"]["fgsm"][1] is None
    report.robust_accuracy[0] = float("nan")
    report.to_json(path)
    assert json.loads(path.read_text())["robust_accuracy"][0] is None
    with pytest.raises(ValueError, match="unknown fields"):
        RobustnessReport.from_dict({"bogus": 1})
    assert report.worst_case(8 / 255) == 0.0
    with pytest.raises(ValueError, match="not evaluated"):
        report.worst_case(4 / 255)


def test_plot_writes_png(tmp_path):
    import matplotlib.image

    path = tmp_path / "acc.png"
    _report().plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert np.std(image) > 0.01  # something is drawn
    assert sorted(os.listdir(tmp_path)) == ["acc.png"]
