"""Smoke test of examples/bit_width_study.py --quick on the real CIFAR-10 JPEGs and exact test images."""

import importlib.util
import json
import pathlib

import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "bit_width_study.py"


def test_bit_width_study_quick(shared_data, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("_qrk_bit_width_study", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "study"
    results = module.main(["--quick", "--policies", "float,int4", "--out", str(out),
                           "--data-dir", str(shared_data / "cifar10-jpeg"),
                           "--exact-dir", str(shared_data / "cifar10" / "cifar-10-batches-py")])
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["resnet8_float.weights.h5", "resnet8_int4.weights.h5",
                                                     "results.json", "results.md", "transferability.png"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["train_images"] == 256 and set(saved["clean_accuracy"]) == {"float", "int4"}
    tm = saved["transferability"]
    assert tm["names"] == ["float", "int4"] and np.asarray(tm["counts"]).shape == (2, 2)
    # Every section is printed and saved, with values in range.
    md = (out / "results.md").read_text()
    for heading in ("## Transferability (PGD)", "## Value shift", "## Gradient misalignment",
                    "## Gradient-masking diagnostics", "## Mixed-precision ensemble"):
        assert heading in md and heading in printed
    vs = saved["value_shift"]["int4"]["own_pgd"]
    assert 0 <= vs["mean_activation_shift"] <= 1 and len(vs["layers"]) > 10
    assert saved["misalignment"]["float"]["mean_sign_agreement"] == 1.0       # float vs itself
    rows = {r["attack"]: r["robust_accuracy"] for r in saved["ensemble"]["rows"]}
    assert {"clean", "adaptive_pgd", "square", "transfer_from_float", "transfer_from_int4"} == set(rows)
    assert all(0 <= v <= 1 for v in rows.values()) and rows["adaptive_pgd"] <= rows["clean"]
    assert results["settings"]["quick"] is True
