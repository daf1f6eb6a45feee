"""Square attack speed on the QKeras ResNet-8 (int4) with exact CIFAR-10 images: ours vs ART, against the bound.

Prints, side by side in one run (same model, images, eps and query budget):

* the model's own batched forward speed (images/s through the same compiled logits function the attack uses, at the
  attack's batch size): the bound for any score-based attack, which needs one forward per query;
* our :func:`qrobust_keras.attacks.square` (batched, one model call per iteration, samples refilled as others
  finish): queries/s, success rate, mean queries per sample;
* ART 1.20 ``SquareAttack`` through ``TensorFlowV2Classifier`` (the usual route for a Keras model) with
  ``max_iter = queries - 2`` (ours counts the clean input and the initial stripes inside its budget): queries/s
  (candidates scored), forwards/s (ART scores each iteration's current points twice more) and success rate.

Goal (issue 5): our queries/s within 1.1x of the forward bound, at a success rate >= ART's.
Queries/s of the attacks count the candidate inputs the attack scores (the paper's query count); a sample that
succeeds early stops costing queries, so both attacks are compared on the same query definition.

The machine may be shared: timings are noisy; compare ratios from the same run.

Usage:
    .venv/bin/python bench/square_speed.py [--data ../shared/data] [--n 512] [--eps 4] [--queries 200]

``square_section(model, x, y)`` returns the printable rows for ``bench/attack_speed.py``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import qrobust_keras as qrk  # noqa: E402
from qrobust_keras.attacks.common import PredictFn, as_predict_fn  # noqa: E402
from qrobust_keras.attacks.square import square  # noqa: E402
from qrobust_keras.models.heads import logits_model  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from _goals import no_record_flag, record  # noqa: E402


def _warm(predict, x, batch_size):
    """Trace the compiled forward for a full batch and for other batch sizes (the relaxed-shape trace)."""
    for m in (batch_size, batch_size - 1, 3):
        predict(x[:max(m, 1)])
    predict.queries = 0


def forward_bound(model, x: np.ndarray, batch_size: int, repeats: int = 3) -> float:
    """Images/s of the model's batched forward pass (logits, inference mode), best of ``repeats`` passes over x."""
    predict = as_predict_fn(logits_model(model), batch_size)
    _warm(predict, x, batch_size)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        predict(x)
        best = min(best, time.perf_counter() - t)
    return len(x) / best


def run_ours(model, x, y, eps, queries, batch_size, seed=0):
    inner = as_predict_fn(logits_model(model), batch_size)
    _warm(inner, x, batch_size)  # tracing stays outside the timing, as in forward_bound
    spent = {"model": 0.0, "calls": 0}

    def timed(a):
        t0 = time.perf_counter()
        out = inner(a)
        spent["model"] += time.perf_counter() - t0
        spent["calls"] += 1
        return out

    predict = PredictFn(timed, batch_size=10 ** 9, name=inner.name)  # inner chunks by batch_size
    t = time.perf_counter()
    x_adv, info = square(predict, x, y, eps=eps, queries=queries, batch_size=batch_size, seed=seed, verbose=0,
                         return_info=True)
    seconds = time.perf_counter() - t
    assert int(info.queries.sum()) == predict.queries
    return dict(seconds=seconds, queries=int(info.queries.sum()), success=float(info.success.mean()),
                mean_queries=float(info.queries.mean()), model_seconds=spent["model"], calls=spent["calls"])


def run_art(model, x, y, eps, queries, batch_size, seed=0):
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    from qrobust_keras._keras import tf

    logits = logits_model(model)
    clf = TensorFlowV2Classifier(logits, nb_classes=int(logits.output_shape[-1]), input_shape=tuple(x.shape[1:]),
                                 loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                                 clip_values=(0.0, 1.0))
    counts = {"forwards": 0, "loss_rows": 0}
    predict = clf.predict

    def counting_predict(a, batch_size=128, **kw):
        counts["forwards"] += len(a)
        return predict(a, batch_size=batch_size, **kw)

    clf.predict = counting_predict
    attack = SquareAttack(clf, norm=np.inf, eps=eps, max_iter=max(queries - 2, 1), p_init=0.05,
                          batch_size=batch_size, verbose=False)
    loss = attack.loss

    def counting_loss(a, b):
        counts["loss_rows"] += len(a)
        return loss(a, b)

    attack.loss = counting_loss
    clf.predict(x[:batch_size], batch_size=batch_size)  # trace
    counts["forwards"] = 0
    state = np.random.get_state()
    np.random.seed(seed)
    t = time.perf_counter()
    try:
        x_adv = attack.generate(x, np.eye(int(logits.output_shape[-1]))[y])
    finally:
        np.random.set_state(state)
    seconds = time.perf_counter() - t
    success = float((logits(x_adv, training=False).numpy().argmax(1) != y).mean())
    # each iteration scores the current points (loss) and the candidates (loss): candidates are half the loss rows
    return dict(seconds=seconds, queries=counts["loss_rows"] // 2, forwards=counts["forwards"], success=success)


def square_section(model, x, y, eps: float = 4 / 255, queries: int = 200, batch_size: int = 256) -> list[str]:
    """Printable rows comparing our Square with ART's SquareAttack and the forward bound on ``model``."""
    y = np.asarray(y, np.int64)
    bound_before = forward_bound(model, x, batch_size)
    ours = run_ours(model, x, y, eps, queries, batch_size)
    bound = max(bound_before, forward_bound(model, x, batch_size))  # best of before/after: less contention noise
    art = run_art(model, x, y, eps, queries, batch_size)
    q_ours = ours["queries"] / ours["seconds"]
    q_art = art["queries"] / art["seconds"]
    rows = [
        f"Square L-inf eps={eps * 255:g}/255, budget {queries} queries per sample, {len(x)} images, batch {batch_size}",
        "| | queries/s | forwards/s | success | seconds | queries |",
        "|---|---|---|---|---|---|",
        f"| model forward (bound) | {bound:,.0f} | {bound:,.0f} | | | |",
        f"| ours | {q_ours:,.0f} | {q_ours:,.0f} | {100 * ours['success']:.1f}% | {ours['seconds']:.1f} | "
        f"{ours['queries']:,} |",
        f"| ART SquareAttack | {q_art:,.0f} | {art['forwards'] / art['seconds']:,.0f} | {100 * art['success']:.1f}% | "
        f"{art['seconds']:.1f} | {art['queries']:,} |",
        f"ours vs bound: bound / ours = "
        f"{record('square_bound_over_ours', bound / q_ours, f'int4 ResNet-8, {len(x)} images, {queries} queries')}; "
        f"ours vs ART: {q_ours / q_art:.2f}x "
        f"queries/s at success {100 * ours['success']:.1f}% vs {100 * art['success']:.1f}%",
        f"ours: {100 * ours['model_seconds'] / ours['seconds']:.0f}% of the time inside model calls "
        f"({ours['calls']} calls, {ours['queries'] / ours['calls']:.0f} inputs per call on average; "
        f"{ours['queries'] / ours['model_seconds']:,.0f} queries/s inside them), the rest is the attack's own numpy",
    ]
    return rows


def _model(data: pathlib.Path, x_train, y_train, epochs: int):
    from _models import int4_resnet8  # the same int4 ResNet-8 as the attack-speed benchmark

    return int4_resnet8(data, x_train, y_train, epochs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("QROBUST_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--n", type=int, default=512,
                        help="exact test images attacked (more than the batch size keeps model calls full)")
    parser.add_argument("--eps", type=float, default=4.0, help="L-inf budget in 1/255 units")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1, help="QAT epochs before attacking")
    args = parser.parse_args(no_record_flag(argv))
    data = pathlib.Path(args.data)
    (x_train, y_train), (x_test, y_test) = qrk.data.load_cifar10(data / "cifar10", source="pickle", verbose=0)
    x_train = x_train.astype("float32") / 255.0
    x = x_test[:args.n].astype("float32") / 255.0
    y = np.asarray(y_test[:args.n], np.int64)
    print(f"{os.cpu_count()} CPU cores; machine possibly shared with other jobs: timings are noisy (10-30%).")
    model = _model(data, x_train, y_train, args.epochs)
    acc = float((model.predict(x, verbose=0, batch_size=256).argmax(1) == y).mean())
    print(f"clean accuracy on the {len(x)} exact test images: {100 * acc:.1f}%")
    for row in square_section(model, x, y, eps=args.eps / 255, queries=args.queries, batch_size=args.batch_size):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
