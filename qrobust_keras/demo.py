"""``qrobust demo``: the library end to end in a few minutes on a laptop CPU.

Trains a float ResNet-8 (the MLCommons recipe, shortened) and a robust quantized one (the ``stq_jr`` recipe:
stochastic-ternary kernels, 4-bit activations, per-layer Jacobian regularization) on a subset of CIFAR-10, attacks
both (FGSM, PGD, Square), exports the robust one to an integer-only int8 TFLite file, checks the file in the TFLite
Micro interpreter and attacks the file itself (Square, black-box), and writes ``demo_report/`` with a markdown
table (``report.md``), an accuracy-vs-eps plot (``accuracy_vs_eps.png``), the TFLite Micro footprint and every
number as JSON (``results.json``).

CIFAR-10 is looked up in ``data_dir``, then ``$QROBUST_DATA_DIR``, then the Keras cache. When none exists the demo
says so and runs on a generated 10-class image task (oriented colour gratings in noise), labelled *synthetic* in
every output: the numbers then show the mechanics, not CIFAR-10 results.

The demo numbers come from minutes of training, not the hours of the full recipes: they show the workflow and
the direction of the effect, not the reproduction (see docs/reproduction.md).

Example:

>>> from qrobust_keras.demo import run_demo
>>> run_demo(data_dir="shared/data/cifar10", out="demo_report", quick=True)   # doctest: +SKIP
0
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import numpy as np

__all__ = ["run_demo", "DemoConfig", "synthetic_images", "find_demo_data"]


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of a demo run (full: a few minutes on 2 cores; quick: CI)."""

    n_train: int = 8000
    n_test: int = 500
    float_epochs: int = 8
    robust_epochs: int = 8
    eps: tuple = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    attacks: tuple = ("fgsm", "pgd", "square")
    pgd_steps: int = 10
    square_queries: int = 200
    n_tflm: int = 100
    n_file_attack: int = 100

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(n_train=384, n_test=48, float_epochs=1, robust_epochs=1, eps=(2 / 255, 8 / 255), pgd_steps=3,
                   square_queries=20, n_tflm=8, n_file_attack=16)


def synthetic_images(n: int, seed: int = 0, num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A generated 10-class 32x32 RGB task: class k is a grating at angle k*pi/10 with a class colour, random phase
    and frequency jitter, plus Gaussian noise. uint8 images, int64 labels (balanced)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes
    rng.shuffle(y)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    angles = np.pi * y / num_classes
    freq = rng.uniform(0.35, 0.5, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    proj = np.cos(angles)[:, None, None] * xx + np.sin(angles)[:, None, None] * yy
    wave = 0.5 + 0.5 * np.sin(freq[:, None, None] * proj + phase[:, None, None])
    palette = np.random.default_rng(1234).uniform(0.3, 1.0, size=(num_classes, 3)).astype(np.float32)
    images = wave[..., None] * palette[y][:, None, None, :]
    images += rng.normal(0, 0.12, size=images.shape)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), y.astype(np.int64)


def find_demo_data(data_dir: str | None, cfg: DemoConfig, verbose: int = 1) -> tuple:
    """``((x_train, y_train), (x_test, y_test), description, synthetic)`` for the demo.

    Raises:
        DataNotFoundError: ``data_dir`` was given explicitly but holds no CIFAR-10 (an explicit folder that is
            wrong is a mistake to report, not a reason to switch to synthetic data).
    """
    from qrobust_keras.data import DataNotFoundError, find_cifar10, load_cifar10

    try:
        kind, path = find_cifar10(data_dir)
    except DataNotFoundError as exc:
        if data_dir is not None:
            raise
        print(f"qrobust demo: CIFAR-10 not found ({exc})\nqrobust demo: using a small GENERATED image task instead "
              "(labelled SYNTHETIC in every output); pass --data-dir to use CIFAR-10", file=sys.stderr)
        x, y = synthetic_images(cfg.n_train + cfg.n_test, seed=0)
        return ((x[:cfg.n_train], y[:cfg.n_train]), (x[cfg.n_train:], y[cfg.n_train:]),
                "SYNTHETIC generated gratings (no CIFAR-10 found)", True)
    (x_train, y_train), (x_test, y_test) = load_cifar10(path, source=kind, verbose=verbose)
    rng = np.random.default_rng(0)
    tr = np.sort(rng.permutation(len(x_train))[:cfg.n_train])
    te = np.sort(rng.permutation(len(x_test))[:cfg.n_test])
    what = "exact python batches" if kind == "pickle" else "image files"
    return (x_train[tr], y_train[tr]), (x_test[te], y_test[te]), f"CIFAR-10 ({what} in {path})", False


def _log(verbose: int, msg: str) -> None:
    if verbose:
        print(f"qrobust demo: {msg}", flush=True)


def run_demo(data_dir: str | None = None, out: str = "demo_report", quick: bool = False, verbose: int = 1,
             config: DemoConfig | None = None) -> int:
    """Run the demo and write the report folder; returns 0 (the CLI exit status).

    Args:
        data_dir: CIFAR-10 folder (pickle batches or a class-folder image tree); None searches
            ``$QROBUST_DATA_DIR`` and the Keras cache, then falls back to the synthetic task.
        out: report folder (created).
        quick: tiny sizes for CI (a few hundred images, one epoch, few attack steps).
        verbose: 0 silent, 1 progress lines.
        config: explicit sizes (overrides ``quick``).
    """
    from qrobust_keras import export as qexport
    from qrobust_keras._files import atomic_write
    from qrobust_keras.cli import eps_label, plot_accuracy_vs_eps, run_attacks
    from qrobust_keras.recipes import fit_recipe, get_recipe

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    t0 = time.time()
    os.makedirs(out, exist_ok=True)
    train, test, source, synthetic = find_demo_data(data_dir, cfg, verbose)
    tag = " [SYNTHETIC]" if synthetic else ""
    _log(verbose, f"data: {source}; {len(train[0])} training and {len(test[0])} test images")
    x_test = test[0].astype(np.float32) / 255.0
    y_test = test[1]
    runs = {
        "float (mlcommons)": get_recipe("mlcommons", dataset="cifar10", epochs=cfg.float_epochs, batch_size=64,
                                        lr_schedule="constant"),
        "stq_jr": get_recipe("stq_jr", dataset="cifar10", epochs=cfg.robust_epochs, jr_warmup_epochs=1),
    }
    models, timings = {}, {}
    for label, recipe in runs.items():
        _log(verbose, f"training {label}{tag}: {recipe.epochs} epochs of {len(train[0])} images")
        start = time.time()
        run_dir = os.path.join(out, "runs", recipe.name)
        if os.path.exists(os.path.join(run_dir, "model.h5")):
            os.remove(os.path.join(run_dir, "model.h5"))  # a demo always trains afresh
            for name in ("run_config.json", "history.csv"):
                if os.path.exists(os.path.join(run_dir, name)):
                    os.remove(os.path.join(run_dir, name))
        models[label] = fit_recipe(recipe, train, test, run_dir, verbose=0,
                                   run_info={"source": source, "synthetic": synthetic, "n_train": len(train[0]),
                                             "n_test": len(test[0])})
        timings[label] = round(time.time() - start, 1)

    evaluations = {}
    for label, model in models.items():
        _log(verbose, f"attacking {label} with {', '.join(cfg.attacks)} at eps "
                      f"{', '.join(eps_label(e) for e in cfg.eps)}")
        evaluations[label] = run_attacks(model, "keras", x_test, y_test, list(cfg.attacks), list(cfg.eps),
                                         steps=cfg.pgd_steps, queries=cfg.square_queries, seed=0)

    _log(verbose, "exporting stq_jr to an int8 TFLite file")
    tfl_path = os.path.join(out, "stq_jr_int8.tflite")
    rep = train[0][:500].astype(np.float32) / 255.0
    info = qexport.export_tflite(models["stq_jr"], tfl_path, representative_data=rep,
                                 fidelity_data=(x_test, y_test), overwrite=True)
    fp = qexport.tflm_footprint(tfl_path)
    litert = qexport.TFLiteModel(tfl_path)
    tflm = qexport.TFLiteModel(tfl_path, runtime="tflm")
    k = min(cfg.n_tflm, len(x_test))
    micro_scores = tflm.predict(x_test[:k])
    lite_scores = litert.predict(x_test[:k])
    tflm_check = {"samples": k, "argmax_agreement_with_litert": float(np.mean(
        micro_scores.argmax(1) == lite_scores.argmax(1))), "max_abs_score_diff": float(np.abs(
            micro_scores - lite_scores).max()), "accuracy": float(np.mean(micro_scores.argmax(1) == y_test[:k]))}
    _log(verbose, f"attacking the int8 file itself (Square, {cfg.square_queries} queries)")
    m = min(cfg.n_file_attack, len(x_test))
    file_eval = run_attacks(litert, "tflite", x_test[:m], y_test[:m], ["square"], list(cfg.eps),
                            queries=cfg.square_queries, seed=0)
    evaluations["stq_jr int8 file"] = file_eval

    results = {"data": source, "synthetic": synthetic, "quick": quick, "config": dataclasses.asdict(cfg),
               "train_seconds": timings, "evaluations": evaluations, "export": info.to_dict(),
               "tflm_footprint": dataclasses.asdict(fp), "tflm_check": tflm_check,
               "total_seconds": None}
    png = plot_accuracy_vs_eps(evaluations, os.path.join(out, "accuracy_vs_eps.png"),
                               title=f"worst-case accuracy vs eps{' (SYNTHETIC data)' if synthetic else ''}")
    results["total_seconds"] = round(time.time() - t0, 1)
    atomic_write(os.path.join(out, "results.json"), json.dumps(results, indent=2, default=str))
    md = _markdown(results, os.path.basename(png), os.path.basename(tfl_path))
    report = os.path.join(out, "report.md")
    atomic_write(report, md)
    if verbose:
        print(md)
    print(f"qrobust demo: report written to {os.path.abspath(report)}{tag}")
    return 0


def _markdown(r: dict, png: str, tfl: str) -> str:
    from qrobust_keras.cli import eps_label

    syn = r["synthetic"]
    title = "# qrobust demo report" + (" - SYNTHETIC DATA" if syn else "")
    eps = r["evaluations"]["stq_jr"]["eps"]
    labels = [eps_label(e) for e in eps]
    lines = [title, ""]
    if syn:
        lines += ["> **Synthetic data**: no CIFAR-10 copy was found, so every number below is measured on a "
                  "generated grating task and says nothing about CIFAR-10. Pass `--data-dir` to use CIFAR-10.", ""]
    lines += [f"Data: {r['data']}. Training seconds: " + ", ".join(f"{k} {v} s" for k, v in r["train_seconds"].items())
              + f"; total {r['total_seconds']} s." + (" Quick (CI) sizes." if r["quick"] else ""),
              "", "Minutes of training on a subset: these numbers show the workflow, not the full recipes' results "
              "(docs/reproduction.md).", "",
              "## Robust accuracy (per attack; worst case = correct under every attack)", "",
              "| model | attack | clean | " + " | ".join(f"eps {lab}" for lab in labels) + " |",
              "|---|---|---|" + "---|" * len(labels)]
    for model, ev in r["evaluations"].items():
        for name, row in ev["results"].items():
            lines.append(f"| {model} | {name} | {100 * ev['clean']:.1f}% | " +
                         " | ".join(f"{100 * row[lab]:.1f}%" for lab in labels) + " |")
        lines.append(f"| {model} | **worst case** | {100 * ev['clean']:.1f}% | " +
                     " | ".join(f"**{100 * ev['worst'][lab]:.1f}%**" for lab in labels) + " |")
    ex, fp, tc = r["export"], r["tflm_footprint"], r["tflm_check"]
    lines += ["", f"![accuracy vs eps]({png})", "", "## Deployment (stq_jr, int8)", "",
              "| | |", "|---|---|",
              f"| file | `{tfl}` |", f"| size (flash) | {ex['size_bytes']:,} bytes |",
              f"| TFLite Micro arena | {fp['arena_bytes']:,} bytes |" if fp.get("arena_bytes") else
              "| TFLite Micro arena | not measured |",
              f"| all ops supported by TFLite Micro | {fp['all_ops_supported']} |",
              f"| argmax agreement Keras vs int8 file | {100 * (ex['agreement'] or 0):.1f}% on {ex['n_fidelity']} "
              "images |",
              f"| accuracy Keras / int8 file | {100 * (ex['accuracy_keras'] or 0):.1f}% / "
              f"{100 * (ex['accuracy_tflite'] or 0):.1f}% |",
              f"| TFLite Micro vs LiteRT argmax agreement | {100 * tc['argmax_agreement_with_litert']:.1f}% on "
              f"{tc['samples']} images |",
              "| MLCommons int8 ResNet-8 for comparison | 98,496 bytes, arena 55,984 bytes |", ""]
    return "\n".join(lines) + "\n"
