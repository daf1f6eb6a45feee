"""Attack speed with real data: ours vs cleverhans vs ART side by side, and ours against the compute bound.

Models: the MLCommons Tiny ResNet-8 (float, official weights), the int4 QKeras ResNet-8 (from those weights, briefly
fine-tuned) on exact CIFAR-10 test images, and the MLCommons DS-CNN (float) on the shared Speech Commands test clips
(MFCC features). Sections (all in one run, same images):

1. PGD-10 throughput (img/s) of ``qrobust_keras.attacks.pgd`` vs cleverhans 4 eager ``projected_gradient_descent``
   vs ART 1.20 ``ProjectedGradientDescent`` (same eps, steps, step size eps/4, one random start), robust accuracy
   beside each, on the float and the int4 ResNet-8. Goals (issue 23): ours >= 1.5x cleverhans and >= 3x ART.
2. The bound, per model: the time of one forward + input-gradient pass of a batch (a compiled function computing
   the logits, the summed cross-entropy and its gradient with respect to the input, nothing else), timed alone,
   warm, median of repeats. Every attack's speed is then given as a fraction of it: (gradient passes the attack
   made x the bound) / the attack's wall time, warm. Goals (issue 23): PGD and APGD-CE >= 0.8. The first call on
   a new model (the library's per-model cache emptied, as for a model just loaded) may cost at most 1 s more than
   the warm call.
3. Square attack (from ``bench/square_speed.py``'s ``square_section``, written with the black-box attacks), if present.
4. Time to strength: seconds our default white-box suite (``evaluate_robustness`` with the registry's image defaults,
   fgsm -> pgd-20 -> apgd-ce -> apgd-dlr, ``cascade=True``) needs until its worst-case robust accuracy is within
   1 point of what cleverhans PGD-100 with 5 random restarts reaches, vs the seconds of that PGD-100 x5.
   Goal: <= 1/3.

The int4 ResNet-8 starts from the MLCommons float weights (when present) and is fine-tuned briefly with
quantization-aware training on the 5,085 exact training images; otherwise it is trained from scratch for a few epochs.
Speed does not depend on accuracy; robust accuracies are reported so that equal-strength claims can be checked.

The machine is usually shared with other processes: timings are noisy (repeat runs differ by 10-30%); ratios
measured in the same run are what to compare.

Each goal's value is recorded in ``bench/results.jsonl`` (``bench/_goals.py``); ``bench/summary.py`` prints the table.

Usage:
    .venv/bin/python bench/attack_speed.py [--data ../shared/data] [--n 256] [--eps 1] [--skip-slow]
        [--skip-strength] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

import qrobust_keras as qrk
from qrobust_keras._keras import keras, tf

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _goals import no_record_flag, record  # noqa: E402
from _models import int4_resnet8 as build_model  # noqa: E402  (shared with square_speed.py)


def robust_accuracy(model: keras.Model, x_adv: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x_adv, verbose=0, batch_size=256).argmax(1) == y).mean())


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def pgd_section(label, model, x, y, eps, steps, batch_size, skip_slow):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    lm = qrk.models.logits_model(model)
    step = eps / 4
    rows = []
    # Warm-up (tracing) is excluded for every contender.
    qrk.attacks.pgd(model, x[:batch_size], y[:batch_size], eps=eps, steps=steps, step_size=step,
                    batch_size=batch_size, verbose=0)
    ours, t = timed(lambda: qrk.attacks.pgd(model, x, y, eps=eps, steps=steps, step_size=step,
                                            batch_size=batch_size, verbose=0))
    rows.append(("qrobust_keras pgd (compiled loop)", len(x) / t, robust_accuracy(model, ours, y)))

    def cleverhans_all():
        out = [projected_gradient_descent(lm, x[i:i + batch_size], eps, step, steps, np.inf, clip_min=0.0,
                                          clip_max=1.0, y=y[i:i + batch_size], rand_init=True, rand_minmax=eps,
                                          sanity_checks=False).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out)

    projected_gradient_descent(lm, x[:8], eps, step, 1, np.inf, clip_min=0.0, clip_max=1.0, y=y[:8],
                               rand_init=True, rand_minmax=eps, sanity_checks=False)
    ch, t = timed(cleverhans_all)
    rows.append(("cleverhans 4 eager PGD", len(x) / t, robust_accuracy(model, ch, y)))
    if not skip_slow:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import TensorFlowV2Classifier

        classifier = TensorFlowV2Classifier(
            lm, nb_classes=10, input_shape=x.shape[1:], clip_values=(0.0, 1.0),
            loss_object=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=step, max_iter=steps,
                                          num_random_init=1, batch_size=batch_size, verbose=False)
        attack.generate(x[:8], y=np.eye(10)[y[:8]])
        art, t = timed(lambda: attack.generate(x, y=np.eye(10)[y]))
        rows.append(("ART 1.20 ProjectedGradientDescent", len(x) / t, robust_accuracy(model, art, y)))
    base = rows[0][1]
    print(f"\n## {label}: PGD-{steps}, L-inf eps {eps * 255:g}/255, step eps/4, 1 random start, batch {batch_size}, "
          f"{len(x)} images")
    print(f"{'attack':<40}{'img/s':>10}{'ours is x faster':>18}{'robust acc':>12}")
    for name, speed, acc in rows:
        print(f"{name:<40}{speed:>10.1f}{base / speed:>18.2f}{100 * acc:>11.1f}%")
    print(f"ours / cleverhans: {record('pgd_vs_cleverhans', base / rows[1][1], label)}")
    if len(rows) > 2:
        print(f"ours / ART: {record('pgd_vs_art', base / rows[2][1], label)}")
    return rows


def bound_section(label, model, x, y, eps, steps, batch_size, clip=(0.0, 1.0), reps=20):
    """Our PGD and APGD-CE against the forward + input-gradient bound of ``model`` (see the module docstring)."""
    lm = qrk.models.logits_model(model)

    @tf.function
    def forward_and_gradient(xb, yb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(yb, lm(xb, training=False),
                                                                                 from_logits=True))
        return tape.gradient(loss, xb)

    xb, yb = tf.constant(x[:batch_size]), tf.constant(y[:batch_size])
    t0 = time.perf_counter()
    forward_and_gradient(xb, yb).numpy()
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        forward_and_gradient(xb, yb).numpy()
        times.append(time.perf_counter() - t0)
    bound = float(np.median(times))
    batches = int(np.ceil(len(x) / batch_size))
    print(f"\n## {label}: against the bound, {len(x)} inputs, batch {batch_size}, eps {eps:g}")
    print(f"bound: one forward + input-gradient pass of a batch of {len(xb)}: {1000 * bound:.1f} ms "
          f"({len(xb) / bound:.0f} input-gradients/s)")
    # What tracing costs any compiled attack: the first call of that one step, over its warm time. An attack loop
    # traces at least this step (and its loop and bookkeeping around it), so its first-call extra cannot be lower.
    trace = first - bound
    print(f"tracing floor: the first call of that step alone costs {trace:.2f} s over warm")
    attacks = {"pgd": lambda: qrk.attacks.pgd(model, x, y, eps=eps, steps=steps, step_size=eps / 4,
                                              batch_size=batch_size, verbose=0, return_info=True, clip_min=clip[0],
                                              clip_max=clip[1]),
               "apgd-ce": lambda: qrk.attacks.apgd(model, x, y, eps=eps, steps=steps, batch_size=batch_size,
                                                   verbose=0, return_info=True, clip_min=clip[0], clip_max=clip[1])}
    cold = {}
    for name, run in attacks.items():
        # each attack's first call on a new model: nothing traced yet, not even the forward pass an attack run
        # before it would have left behind
        model.__dict__.pop("_qrobust_attack_cache", None)
        _, cold[name] = timed(run)
    print(f"{'attack':<12}{'gradients':>10}{'cold s':>9}{'warm s':>9}{'fraction of bound':>20}")
    for name, run in attacks.items():
        # best of two warm calls: the shared forward pass compiles XLA for a batch size only once the plain graph has
        # cost as long as a compile (compiled_forward), and that compile may fall in the first warm call
        (_, info), warm = timed(run)
        warm = min(warm, timed(run)[1])
        passes = int(info.gradients.max()) * batches
        fraction = passes * bound / warm
        goal = {"pgd": "pgd_of_bound", "apgd-ce": "apgd_of_bound"}[name]
        print(f"{name:<12}{passes:>10}{cold[name]:>9.2f}{warm:>9.2f}{fraction:>20.2f}   "
              f"{record(goal, fraction, label)}")
        print(f"{'':<12}first call on the new model, seconds over warm: "
              f"{record('first_call_extra_s', cold[name] - warm, f'{label}, {name}')} "
              f"({(cold[name] - warm) / trace:.1f}x the tracing floor)")


def strength_section(model, x, y, eps, batch_size):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    lm = qrk.models.logits_model(model)
    clean = model.predict(x, verbose=0, batch_size=256).argmax(1) == y
    xs, ys = x[clean], y[clean]

    def reference():
        robust = np.ones(len(xs), bool)
        for restart in range(5):
            tf.random.set_seed(restart)
            for i in range(0, len(xs), batch_size):
                adv = projected_gradient_descent(lm, xs[i:i + batch_size], eps, eps / 4, 100, np.inf, clip_min=0.0,
                                                 clip_max=1.0, y=ys[i:i + batch_size], rand_init=True,
                                                 rand_minmax=eps, sanity_checks=False)
                robust[i:i + batch_size] &= model(adv, training=False).numpy().argmax(1) == ys[i:i + batch_size]
        return robust

    robust_ref, t_ref = timed(reference)
    ref_acc = float(robust_ref.sum()) / len(x)
    # Our default white-box suite in cascade order, first cold (the compiled loops are traced inside the timed run,
    # as a user's first call on a model pays it), then warm (same model, loops cached).
    suite = list(qrk.evaluation.DEFAULT_WHITE_BOX)
    print(f"\n## Time to strength, L-inf eps {eps * 255:g}/255, {len(x)} images ({clean.sum()} clean-correct)")
    print(f"cleverhans PGD-100 x 5 restarts (eager): robust accuracy {100 * ref_acc:.1f}% in {t_ref:.1f} s")
    model.__dict__.pop("_qrobust_attack_cache", None)
    reached = {}
    for run in ("cold", "warm"):
        report, t_suite = timed(lambda: qrk.evaluation.evaluate_robustness(
            model, x, y, attacks=suite, eps=[eps], verbose=0, batch_size=batch_size, cascade=True))
        elapsed = 0.0
        reached[run] = None
        print(f"{'our suite, ' + run:<22}{'cum. robust acc':>16}{'cum. seconds':>14}")
        for name in report.attacks:
            elapsed += report.seconds[name][0]
            acc = report.accuracy[name][0]
            print(f"{name:<22}{100 * acc:>15.1f}%{elapsed:>14.1f}")
            if reached[run] is None and acc <= ref_acc + 0.01:
                reached[run] = elapsed
        print(f"whole suite ({run}): {100 * report.robust_accuracy[0]:.1f}% in {t_suite:.1f} s")
        if reached[run] is None:
            print(f"our suite ({run}) did NOT get within 1 point of PGD-100x5")
        else:
            ratio = reached[run] / t_ref
            verdict = record("time_to_strength", ratio, f"int4 ResNet-8, {run}") if run == "warm" else f"{ratio:.2f}x"
            print(f"time to strength ({run}): {reached[run]:.1f} s vs {t_ref:.1f} s = {verdict}")
    return ref_acc, t_ref, report, reached


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("QROBUST_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--n", type=int, default=256, help="test images attacked")
    parser.add_argument("--eps", type=float, default=1.0, help="L-inf budget in 1/255 units")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1, help="QAT epochs before attacking")
    parser.add_argument("--skip-slow", action="store_true", help="skip ART PGD")
    parser.add_argument("--skip-strength", action="store_true", help="skip the time-to-strength section")
    parser.add_argument("--skip-square", action="store_true", help="skip the Square section")
    args = parser.parse_args(no_record_flag(argv))
    data = pathlib.Path(args.data)
    (x_train, y_train), (x_test, y_test) = qrk.data.load_cifar10(data / "cifar10", source="pickle", verbose=0)
    x_train = x_train.astype("float32") / 255.0
    x = x_test[:args.n].astype("float32") / 255.0
    y = y_test[:args.n].astype(np.int64)
    print(f"{os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}: timings are noisy (10-30%) when shared.")
    eps = args.eps / 255
    models = {}
    if (data / "models" / "mlcommons").exists():
        models["float ResNet-8 (MLCommons)"] = qrk.models.load_mlcommons("resnet8", data / "models" / "mlcommons")
    models["int4 ResNet-8 (QKeras)"] = build_model(data, x_train, y_train, args.epochs)
    for label, model in models.items():
        print(f"{label}: clean accuracy on the {len(x)} exact test images: {100 * robust_accuracy(model, x, y):.1f}%")
        pgd_section(label, model, x, y, eps, args.steps, args.batch_size, args.skip_slow)
        bound_section(label, model, x, y, eps, args.steps, args.batch_size)
    speech = data / "speech_commands"
    if (data / "models" / "mlcommons").exists() and speech.exists():
        ds_cnn = qrk.models.load_mlcommons("ds_cnn", data / "models" / "mlcommons")
        xs, ys = qrk.data.load_speech_commands(speech, split="test", features="mfcc")
        xs, ys = xs[:args.n].astype("float32"), ys[:args.n].astype(np.int64)
        # MFCC features span about +-100 per coefficient: an L-inf budget of 0.5 is a small audio perturbation; the
        # box is the features' own range, as `qrobust evaluate` uses for audio.
        bound_section("float DS-CNN (MLCommons), MFCC", ds_cnn, xs, ys, 0.5, args.steps, args.batch_size,
                      clip=(float(xs.min()), float(xs.max())))
    model = models["int4 ResNet-8 (QKeras)"]
    if not args.skip_square:
        from square_speed import square_section  # noqa: E402  (written with the black-box attacks)

        print("\n## Square attack (int4 ResNet-8)")
        for row in square_section(model, x, y):
            print(row)
    if not args.skip_strength:
        strength_section(model, x, y, eps, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
