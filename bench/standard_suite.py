"""Our standard suite vs ART's AutoAttack on the same models and images, side by side in one run.

For each model (the MLCommons Tiny ResNet-8 float reference and an adversarially trained int4 ResNet-8 of this
project) and each L-inf budget, runs

- ours: ``evaluate_robustness(model, x, y, eps=[eps], suite="standard")`` (APGD-CE, APGD-T 9 x 100, FAB-T 9 x 100,
  Square 5,000, as a cascade; AutoAttack's standard version, Croce & Hein 2020);
- ART 1.20 ``AutoAttack`` with its default attack list (APGD-CE and APGD-DLR with 5 random starts each, DeepFool,
  Square 5,000) on a ``TensorFlowV2Classifier`` of the same logits,

and prints robust accuracy of each (ART's adversarial examples re-scored by our model's inference pass), the
difference (goal: ours at most 0.5 point above ART's) and the wall-time ratio (goal: ours >= 3x faster).

The machine is often shared: ratios taken in the same run are what to compare; repeat runs differ by 10-30%.

Usage:
    .venv/bin/python bench/standard_suite.py [--data ../shared/data] [--model runs/resnet8_int4_at2/model.h5]
        [--n 1017] [--eps 1,2,8] [--skip-art]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _goals import no_record_flag, record  # noqa: E402


def _models(data: pathlib.Path, trained: str | None, reference: bool = True):
    from qrobust_keras.models import load_model
    from qrobust_keras.models.mlcommons import load_mlcommons

    models = {"MLCommons ResNet-8 (float)": load_mlcommons("resnet8", data / "models" / "mlcommons")} if reference \
        else {}
    if trained is None:
        from qrobust_keras import zoo

        if "resnet8_int4_at2" in zoo.list():
            models["zoo resnet8_int4_at2"] = zoo.load("resnet8_int4_at2")
    elif os.path.exists(trained):
        models[os.path.basename(os.path.dirname(trained)) or trained] = load_model(trained, compile=False)
    else:
        print(f"(no adversarially trained model at {trained!r}: only the reference is measured)")
    return models


def _art_autoattack(model, x: np.ndarray, y: np.ndarray, eps: float, batch_size: int) -> tuple[np.ndarray, float]:
    from art.attacks.evasion import AutoAttack
    from art.estimators.classification import TensorFlowV2Classifier

    from qrobust_keras._keras import tf
    from qrobust_keras.attacks.gradients import get_logits_model

    logits = get_logits_model(model)
    classifier = TensorFlowV2Classifier(logits, nb_classes=10, input_shape=x.shape[1:], clip_values=(0.0, 1.0),
                                        loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    attack = AutoAttack(classifier, norm=np.inf, eps=eps, eps_step=eps / 4, batch_size=batch_size)
    start = time.perf_counter()
    x_adv = attack.generate(x, y=np.eye(10)[y])
    return x_adv, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    from qrobust_keras.attacks.gradients import predict_labels
    from qrobust_keras.data import find_cifar10, read_pickle_batch
    from qrobust_keras.evaluation import evaluate_robustness

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--model", default=None, help="adversarially trained model (default: the zoo's resnet8_int4_at2)")
    p.add_argument("--n", type=int, default=1017, help="exact test images (default all 1,017)")
    p.add_argument("--eps", default="1,2,8", help="budgets in 1/255 (default 1,2,8)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--skip-art", action="store_true", help="ours only")
    p.add_argument("--skip-reference", action="store_true", help="only the adversarially trained model")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(no_record_flag(argv))
    data = pathlib.Path(args.data)
    _, folder = find_cifar10(str(data / "cifar10"), source="pickle")
    x, y = read_pickle_batch(os.path.join(folder, "test_batch"))
    x, y = x[:args.n].astype(np.float32) / 255.0, y[:args.n]
    rows = []
    print(f"{'model':<30}{'eps':>7}{'ours':>8}{'ART AA':>8}{'ours-ART':>10}{'ours s':>9}{'ART s':>9}{'speedup':>9}")
    for name, model in _models(data, args.model, reference=not args.skip_reference).items():
        for k in [float(v) for v in args.eps.split(",")]:
            eps = k / 255
            start = time.perf_counter()
            ours = evaluate_robustness(model, x, y, eps=[eps], suite="standard", verbose=0,
                                       batch_size=args.batch_size)
            t_ours = time.perf_counter() - start
            row = {"model": name, "eps": f"{k:g}/255", "n": len(x), "ours": ours.robust_accuracy[0],
                   "ours_seconds": t_ours, "ours_broken_first": {a: c[0] for a, c in ours.broken_counts().items()}}
            art_acc = t_art = None
            if not args.skip_art:
                x_adv, t_art = _art_autoattack(model, x, y, eps, args.batch_size)
                ok = predict_labels(model, x, args.batch_size) == y
                art_acc = float(np.mean(ok & (predict_labels(model, x_adv, args.batch_size) == y)))
                row.update(art=art_acc, art_seconds=t_art)
            rows.append(row)
            if art_acc is not None:
                context = f"{name}, {row['eps']}, {len(x)} images"
                record("suite_points_above_art", 100 * (row["ours"] - art_acc), context)
                record("suite_vs_art_speed", t_art / t_ours, context)
            diff = "-" if art_acc is None else f"{100 * (row['ours'] - art_acc):+.1f}"
            print(f"{name:<30}{row['eps']:>7}{100 * row['ours']:>7.1f}%"
                  f"{'-' if art_acc is None else f'{100 * art_acc:.1f}%':>8}{diff:>10}{t_ours:>9.1f}"
                  f"{'-' if t_art is None else f'{t_art:.1f}':>9}{'-' if t_art is None else f'{t_art / t_ours:.1f}x':>9}",
                  flush=True)
    if args.json:
        from qrobust_keras._files import atomic_write

        atomic_write(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
