"""Our standard suite vs ART's AutoAttack on the same models and images, side by side in one run.

For each model (the MLCommons Tiny ResNet-8 float reference and an adversarially trained int4 ResNet-8 of this
project) and each L-inf budget, runs

- ours: ``evaluate_robustness(model, x, y, eps=[eps], suite="standard")`` (APGD-CE, APGD-T 9 x 100, FAB-T 9 x 100,
  Square 5,000 with 5 restarts, as a cascade; AutoAttack's standard version, Croce & Hein 2020);
- ART 1.20 ``AutoAttack`` with its default attack list (APGD-CE and APGD-DLR with 5 random starts each, DeepFool,
  Square 5,000 with 5 restarts) on a ``TensorFlowV2Classifier`` of the same logits,

and prints robust accuracy of each (ART's adversarial examples re-scored by our model's inference pass), the
difference (goal: ours at most 0.5 point above ART's), how many points each breaks that the other leaves standing,
and the wall-time ratio (goal: ours >= 3x faster).

The work is cut into chunks of ``--batch-size`` consecutive images (our suite's seed blocks, so the chunks of ours
together are, sample by sample, the unsharded evaluation); each chunk runs ours and then ART on the same images, and
its per-sample results and seconds are written to ``--cache`` at once. A killed run started again with the same
command skips what the cache holds, so the hours ART needs on 1,017 images can be spread over several runs. A
budget's row is printed, and its goals recorded, once every chunk of both libraries is measured. The default cache,
``bench/standard_suite_cache.json``, is committed with the measurements it holds (like ``bench/results.jsonl``), so
the work survives a new machine; each chunk names its load average, and ours is re-measured when the suite's
settings change.

The machine is often shared: ratios taken chunk by chunk, side by side, are what to compare; repeat runs differ by
10-30%.

Usage:
    .venv/bin/python bench/standard_suite.py [--data ../shared/data] [--model runs/resnet8_int4_at2/model.h5]
        [--n 1017] [--eps 1,2,8] [--skip-art] [--skip-reference] [--cache bench/standard_suite_cache.json]
"""

from __future__ import annotations

import argparse
import json
import math
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


def _load_cache(path: str) -> dict:
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def _save_cache(path: str, cache: dict) -> None:
    from qrobust_keras._files import atomic_write

    if path:  # one line per chunk: the committed file's diffs show which chunks a run added
        lines = [f"{json.dumps(key)}: {json.dumps(cache[key])}" for key in sorted(cache)]
        atomic_write(path, "{\n" + ",\n".join(lines) + "\n}\n")


def _chunk(model, name: str, label: str, x: np.ndarray, y: np.ndarray, eps: float, k: int, count: int, block: int,
           skip_art: bool, cache: dict, cache_path: str) -> dict:
    """Chunk ``k`` of ``count`` (ours, then ART), measured unless the cache holds it, each result saved at once;
    returns its cache entry."""
    from qrobust_keras.attacks.gradients import predict_labels
    from qrobust_keras.evaluation import evaluate_robustness
    from qrobust_keras.evaluation.suite import suite_plan

    start, stop = k * block, min(len(x), (k + 1) * block)
    entry = cache.setdefault(f"{name}|{label}|{start}:{stop}", {})
    settings = json.loads(json.dumps(suite_plan("standard").attack_kwargs, default=str))
    if entry.get("ours", {}).get("settings") != settings:
        t0 = time.perf_counter()
        report = evaluate_robustness(model, x, y, eps=[eps], suite="standard", verbose=0, batch_size=block,
                                     shard=(k, count))
        entry["ours"] = {"robust": [bool(v) for v in report.robust[0]], "seconds": time.perf_counter() - t0,
                         "broken_first": {a: c[0] for a, c in report.broken_counts().items()},
                         "settings": settings, "load1": os.getloadavg()[0]}
        _save_cache(cache_path, cache)
    if not skip_art and "art" not in entry:
        xs, ys = x[start:stop], y[start:stop]
        x_adv, seconds = _art_autoattack(model, xs, ys, eps, block)
        ok = (predict_labels(model, xs, block) == ys) & (predict_labels(model, x_adv, block) == ys)
        entry["art"] = {"robust": [bool(v) for v in ok], "seconds": seconds, "load1": os.getloadavg()[0]}
        _save_cache(cache_path, cache)
    return entry


def _row(name: str, eps_label: str, entries: list[dict]) -> dict:
    ours = np.concatenate([e["ours"]["robust"] for e in entries])
    row = {"model": name, "eps": eps_label, "n": len(ours), "ours": float(ours.mean()),
           "ours_seconds": sum(e["ours"]["seconds"] for e in entries)}
    if all("art" in e for e in entries):
        art = np.concatenate([e["art"]["robust"] for e in entries])
        row.update(art=float(art.mean()), art_seconds=sum(e["art"]["seconds"] for e in entries),
                   only_art_breaks=int(np.sum(ours & ~art)), only_ours_breaks=int(np.sum(art & ~ours)))
    return row


def _format_row(row: dict) -> str:
    art = row.get("art")
    cells = [f"{row['model']:<30}", f"{row['eps']:>7}", f"{100 * row['ours']:>7.1f}%"]
    if art is None:
        cells += [f"{'-':>8}", f"{'-':>10}", f"{'-':>10}", f"{'-':>10}", f"{row['ours_seconds']:>9.1f}",
                  f"{'-':>9}", f"{'-':>9}"]
    else:
        speedup = row["art_seconds"] / row["ours_seconds"]
        cells += [f"{100 * art:>7.1f}%", f"{100 * (row['ours'] - art):>+10.1f}", f"{row['only_art_breaks']:>10}",
                  f"{row['only_ours_breaks']:>10}", f"{row['ours_seconds']:>9.1f}", f"{row['art_seconds']:>9.1f}",
                  f"{speedup:>8.1f}x"]
    return "".join(cells)


def main(argv: list[str] | None = None) -> int:
    from qrobust_keras.data import find_cifar10, read_pickle_batch

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--model", default=None, help="adversarially trained model (default: the zoo's resnet8_int4_at2)")
    p.add_argument("--n", type=int, default=1017, help="exact test images (default all 1,017)")
    p.add_argument("--eps", default="1,2,8", help="budgets in 1/255 (default 1,2,8)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size and chunk size (default 256)")
    p.add_argument("--skip-art", action="store_true", help="ours only")
    p.add_argument("--skip-reference", action="store_true", help="only the adversarially trained model")
    p.add_argument("--cache", default=str(REPO / "bench" / "standard_suite_cache.json"),
                   help="per-chunk results, written as they are measured and reused by a rerun ('' for none)")
    p.add_argument("--json", default=None, help="also write the finished rows here")
    args = p.parse_args(no_record_flag(argv))
    data = pathlib.Path(args.data)
    _, folder = find_cifar10(str(data / "cifar10"), source="pickle")
    x, y = read_pickle_batch(os.path.join(folder, "test_batch"))
    x, y = x[:args.n].astype(np.float32) / 255.0, y[:args.n]
    block = args.batch_size
    count = math.ceil(len(x) / block)
    cache = _load_cache(args.cache)
    rows = []
    print(f"{'model':<30}{'eps':>7}{'ours':>8}{'ART AA':>8}{'ours-ART':>10}{'only ART':>10}{'only ours':>10}"
          f"{'ours s':>9}{'ART s':>9}{'speedup':>9}")
    for name, model in _models(data, args.model, reference=not args.skip_reference).items():
        for k_eps in [float(v) for v in args.eps.split(",")]:
            eps, label = k_eps / 255, f"{k_eps:g}/255"
            row = _row(name, label, [_chunk(model, name, label, x, y, eps, k, count, block, args.skip_art, cache,
                                            args.cache) for k in range(count)])
            rows.append(row)
            art = row.get("art")
            if art is not None:
                context = f"{name}, {label}, {len(x)} images"
                record("suite_points_above_art", 100 * (row["ours"] - art), context)
                record("suite_vs_art_speed", row["art_seconds"] / row["ours_seconds"], context)
            print(_format_row(row), flush=True)
    if args.json:
        from qrobust_keras._files import atomic_write

        atomic_write(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
