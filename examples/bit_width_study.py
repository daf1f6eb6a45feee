"""Bit-width study: does quantization make ResNet-8 robust, or only hide its gradients? (Bernhard et al. 2019)

Trains float, int8, int4, int2, ternary and binary ResNet-8s on the CIFAR-10 JPEGs, then measures on the exact
CIFAR-10 test images (``cifar-10-batches-py/test_batch``, 1,017 images here):

* the source x target transferability matrix of PGD (Bernhard's protocol: samples both models classify correctly),
* the value shift of every quantized model (own PGD examples and examples transferred from the float model),
* the gradient misalignment of every model with the float model,
* the gradient-masking diagnostics of every model (with the float model as twin),
* the mixed-precision ensemble of all models under adaptive PGD (through all members, EOT for stochastic ones),
  Square and transfer attacks.

Everything is printed and saved to ``--out`` (``results.md``, ``results.json``, ``transferability.png``).

Usage::

    python examples/bit_width_study.py --quick                      # tiny smoke run, about a minute
    nice -n 10 python examples/bit_width_study.py                   # the full run of docs/honest_evaluation.md (~1.5 h)

Policies: ``intN`` quantizes kernels and activations to N bits; ``ternary``/``binary`` use ternary/binary kernels
and activations with the first convolution and the classifier kept at int8 (as is usual for such networks).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

DEFAULT_JPEG = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10-jpeg")
DEFAULT_EXACT = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10",
                             "cifar-10-batches-py")
ALL_POLICIES = ("float", "int8", "int4", "int2", "ternary", "binary")


def make_policy(name: str):
    from qrobust_keras.quantization import QuantPolicy

    if name == "float":
        return "float"
    if name in ("int8", "int4", "int2"):
        return QuantPolicy(kernel=name, activation=name)
    if name in ("ternary", "binary"):
        return QuantPolicy(kernel=name, activation=name, overrides={"conv_1": "int8", "logits": "int8"})
    raise ValueError(f"unknown policy {name!r}; choose from {ALL_POLICIES}")


def load_training_data(data_dir: str, quick: bool, train_images: int, seed: int):
    """uint8 training images and labels from the JPEG tree (a class-balanced subset in quick mode)."""
    from qrobust_keras.data import CIFAR10_CLASSES, list_image_folder, load_cifar10, load_image_folder

    if not quick and not train_images:
        (x_train, y_train), _ = load_cifar10(data_dir, source="images", verbose=0)
        return x_train, y_train
    train_root = os.path.join(data_dir, "train")
    paths, labels, _ = list_image_folder(train_root, CIFAR10_CLASSES)
    rng = np.random.default_rng(seed)
    n = train_images or 512
    pick = np.sort(rng.choice(len(paths), size=min(n, len(paths)), replace=False))
    x, y, _ = load_image_folder(train_root, CIFAR10_CLASSES, paths=[paths[i] for i in pick])
    return x, y


def train_models(policies, x_train, y_train, epochs: int, batch_size: int, seed: int, verbose: int,
                 weights_dir: str | None = None, reuse: bool = False):
    """Train one ResNet-8 per policy; weights are saved to ``weights_dir`` (and loaded from there with ``reuse``)."""
    from qrobust_keras._keras import keras
    from qrobust_keras.data import image_dataset
    from qrobust_keras.models import resnet8

    models = {}
    for name in policies:
        keras.utils.set_random_seed(seed)
        model = resnet8(policy=make_policy(name), name=f"resnet8_{name}")
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        path = os.path.join(weights_dir, f"resnet8_{name}.weights.h5") if weights_dir else None
        if reuse and path and os.path.exists(path):
            model.load_weights(path)
            print(f"loaded {name} from {path}", flush=True)
            models[name] = model
            continue
        ds = image_dataset(x_train, y_train, batch_size=batch_size, training=True, seed=seed)
        t0 = time.perf_counter()
        hist = model.fit(ds, epochs=epochs, verbose=verbose)
        print(f"trained {name}: {epochs} epoch(s) on {len(x_train)} images in {time.perf_counter() - t0:.0f} s, "
              f"train accuracy {hist.history['accuracy'][-1]:.3f}", flush=True)
        if path:
            model.save_weights(path)
        models[name] = model
    return models


def run(args) -> dict:
    from qrobust_keras.attacks.pgd import pgd
    from qrobust_keras.data import read_pickle_batch
    from qrobust_keras.defenses import MixedPrecisionEnsemble, evaluate_ensemble
    from qrobust_keras._files import atomic_write
    from qrobust_keras.evaluation.common import dump_json, markdown_table, predict_labels
    from qrobust_keras.evaluation.masking import diagnose_gradient_masking
    from qrobust_keras.evaluation.misalignment import gradient_misalignment
    from qrobust_keras.evaluation.transferability import transferability
    from qrobust_keras.evaluation.value_shift import value_shift

    t_start = time.perf_counter()
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    for p in policies:
        make_policy(p)
    if "float" not in policies:
        raise SystemExit("--policies must include float (the twin for transfer, misalignment and diagnostics)")
    os.makedirs(args.out, exist_ok=True)

    x_train, y_train = load_training_data(args.data_dir, args.quick, args.train_images, args.seed)
    models = train_models(policies, x_train, y_train, args.epochs, args.batch_size, args.seed, args.fit_verbose,
                          weights_dir=args.out, reuse=args.reuse_weights)

    x_exact, y_exact = read_pickle_batch(os.path.join(args.exact_dir, "test_batch"))
    xs = x_exact[: args.n_adv].astype(np.float32) / 255.0
    ys = y_exact[: args.n_adv]
    eps, steps = args.eps, args.steps
    sections = [f"# Bit-width study\n\nTraining: {args.epochs} epoch(s) on {len(x_train)} CIFAR-10 JPEG training "
                f"images per model (Adam 1e-3, batch {args.batch_size}, crop+flip). Adversarial numbers on the first "
                f"{len(xs)} exact test images (`test_batch`), L-inf eps = {eps:.4g}, PGD-{steps} (step eps/4, "
                f"random start).\n"]
    results: dict = {"settings": {k: v for k, v in vars(args).items()}, "train_images": int(len(x_train))}

    def save(final: bool = False) -> str:
        """Write what is measured so far (a long run keeps its finished sections if stopped)."""
        results["seconds"] = time.perf_counter() - t_start
        results["complete"] = final
        text = "\n".join(sections)
        atomic_write(os.path.join(args.out, "results.md"), text)
        dump_json(results, os.path.join(args.out, "results.json"))
        return text

    # Clean accuracy on the exact test images.
    acc = {n: float((predict_labels(m, xs) == ys).mean()) for n, m in models.items()}
    results["clean_accuracy"] = acc
    sections.append("## Clean accuracy (exact test images)\n\n" + markdown_table(
        ["model", "accuracy"], [[n, a] for n, a in acc.items()]) + "\n")

    save()
    # 1. transferability
    print("transferability ...", flush=True)
    tm = transferability(models, xs, ys, attack="pgd", eps=eps, attack_kwargs={"steps": steps}, seed=args.seed)
    tm.heatmap(os.path.join(args.out, "transferability.png"))
    results["transferability"] = tm.to_dict()
    sections.append("## Transferability (PGD)\n\n" + tm.to_markdown())

    save()
    # 2. value shift and 3. gradient misalignment
    print("value shift and gradient misalignment ...", flush=True)
    ref = models["float"]
    x_from_float = pgd(ref, xs, ys, eps=eps, steps=steps, seed=args.seed, verbose=0)
    vs_rows, mis_rows, results["value_shift"], results["misalignment"] = [], [], {}, {}
    for name, model in models.items():
        if name != "float":
            own = value_shift(model, xs, pgd(model, xs, ys, eps=eps, steps=steps, seed=args.seed, verbose=0))
            tr = value_shift(model, xs, x_from_float)
            results["value_shift"][name] = {"own_pgd": own.to_dict(), "transfer_from_float": tr.to_dict()}
            vs_rows.append([name, own.mean_activation_shift, tr.mean_activation_shift])
        mis = gradient_misalignment(ref, model, xs, ys)
        results["misalignment"][name] = mis.to_dict()
        mis_rows.append([f"float vs {name}", mis.mean_cosine, mis.mean_sign_agreement])
    sections.append("## Value shift (mean over QActivation layers of the fraction of activations changing bin)\n\n"
                    + markdown_table(["model", "own PGD examples", "PGD examples from float"], vs_rows) + "\n")
    sections.append("## Gradient misalignment with the float model\n\n"
                    + markdown_table(["pair", "mean cosine", "sign agreement"], mis_rows) + "\n")

    save()
    # 4. masking diagnostics
    results["masking"] = {}
    xd, yd = xs[: args.diag_samples], ys[: args.diag_samples]
    summary_rows = []
    for name, model in models.items():
        print(f"masking diagnostics {name} ...", flush=True)
        if not np.any(predict_labels(model, xd) == yd):
            results["masking"][name] = None
            summary_rows.append([name, "n/a", f"no correctly classified image among the first {len(xd)}"])
            sections.append(f"### Gradient-masking diagnostics: {model.name}\n\nnot run: the model classifies none "
                            f"of the {len(xd)} images correctly.\n")
            continue
        rep = diagnose_gradient_masking(model, xd, yd, eps=eps, float_twin=None if name == "float" else ref,
                                        steps=steps, queries=args.queries, more_steps_factor=args.more_steps_factor,
                                        more_restarts=args.more_restarts, seed=args.seed)
        results["masking"][name] = rep.to_dict()
        print(rep.to_markdown(), flush=True)
        summary_rows.append([name, rep.flagged, ", ".join(rep.flagged_checks) or "-"])
        sections.append(rep.to_markdown())
    sections.insert(-len(models), "## Gradient-masking diagnostics\n\n" + markdown_table(
        ["model", "masking suspected", "flagged checks"], summary_rows) + "\n")

    save()
    # 5. ensemble
    print("ensemble ...", flush=True)
    ensemble = MixedPrecisionEnsemble(models, combine="mean_softmax")
    er = evaluate_ensemble(ensemble, xs, ys, eps=eps, steps=steps, queries=args.ensemble_queries, seed=args.seed)
    results["ensemble"] = er.to_dict()
    sections.append("## Mixed-precision ensemble (mean softmax of all models)\n\n" + er.to_markdown())

    text = save(final=True)
    print(text)
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("QROBUST_CIFAR10_JPEG", DEFAULT_JPEG),
                   help="CIFAR-10 JPEG tree with train/<class>/*.jpg (training)")
    p.add_argument("--exact-dir", default=DEFAULT_EXACT, help="cifar-10-batches-py with test_batch (evaluation)")
    p.add_argument("--out", default="bit_width_study_out", help="output folder")
    p.add_argument("--policies", default=",".join(ALL_POLICIES), help="comma-separated subset of " +
                   ",".join(ALL_POLICIES))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-images", type=int, default=0, help="train on a random subset (0: all 50,000)")
    p.add_argument("--n-adv", type=int, default=1017, help="exact test images for adversarial numbers")
    p.add_argument("--diag-samples", type=int, default=200, help="images for the masking diagnostics")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--queries", type=int, default=1000, help="Square queries in the masking diagnostics")
    p.add_argument("--more-steps-factor", type=int, default=4)
    p.add_argument("--more-restarts", type=int, default=2)
    p.add_argument("--ensemble-queries", type=int, default=500, help="Square queries against the ensemble")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-verbose", type=int, default=2)
    p.add_argument("--reuse-weights", action="store_true",
                   help="load resnet8_<policy>.weights.h5 from --out instead of training where present")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke run: 256 training images, 1 epoch, 24 test images, few steps and queries")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs = 1
        args.train_images = args.train_images or 256
        args.n_adv = min(args.n_adv, 24)
        args.diag_samples = min(args.diag_samples, 12)
        args.steps = min(args.steps, 3)
        args.queries = min(args.queries, 20)
        args.more_steps_factor = 2
        args.more_restarts = 1
        args.ensemble_queries = min(args.ensemble_queries, 10)
        args.fit_verbose = 0
    return args


def main(argv=None) -> dict:
    import qrobust_keras  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

    return run(parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
