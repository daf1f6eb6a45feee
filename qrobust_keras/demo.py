"""``qrobust demo``: the library end to end in a few minutes on a laptop CPU.

Trains a float ResNet-8 (the MLCommons recipe, shortened) on a subset of CIFAR-10 and sets a robust quantized one
beside it: on real CIFAR-10, the zoo's ``resnet8_int4_at2`` (int4 kernels and ReLUs, adversarially trained for
hours; :mod:`qrobust_keras.zoo`), loaded instead of trained; on the synthetic fallback, one trained here with the
``stq_jr`` recipe (stochastic-ternary kernels, 4-bit activations, per-layer Jacobian regularization), since the zoo
model needs real CIFAR-10 test images. It attacks both (FGSM, PGD, Square), exports the robust one to an
integer-only int8 TFLite file, checks the file in the TFLite Micro interpreter and attacks the file itself (Square,
black-box), and writes ``demo_report/`` with a markdown table (``report.md``), an accuracy-vs-eps plot
(``accuracy_vs_eps.png``), the TFLite Micro footprint and every number as JSON (``results.json``).

CIFAR-10 is looked up in ``data_dir``, then ``$QROBUST_DATA_DIR``, then the Keras cache; ``download=True`` fetches it
with Keras when none is found. Otherwise the demo says so and runs on a generated 10-class image task (oriented
colour gratings in noise), labelled *synthetic* in every output: the numbers then show the mechanics, not CIFAR-10
results.

Optional pieces are checked before any training: without ``tflite-micro`` the TFLite Micro steps are skipped, and
without LiteRT (``ai-edge-litert``) the int8 file runs in TensorFlow's own interpreter; the report names what was
skipped and the pip command that adds it. A step that fails after training is recorded in the report, which is
always written, and the demo then returns 1.

The demo numbers come from minutes of training, not the hours of the full recipes: they show the workflow and
the direction of the effect, not the reproduction (see docs/reproduction.md).

Example:

>>> from qrobust_keras.demo import run_demo
>>> run_demo(data_dir="shared/data/cifar10", out="demo_report", quick=True)   # doctest: +SKIP
0
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time
import traceback
from typing import Any

import numpy as np

__all__ = ["run_demo", "DemoConfig", "synthetic_images", "find_demo_data", "optional_pieces", "OPTIONAL"]

# name -> (module, what it does in the demo, how to add it)
OPTIONAL = {
    "tflite-micro": ("tflite_micro", "TFLite Micro footprint and the TFLite Micro check of the int8 file",
                     "pip install tflite-micro"),
    "ai-edge-litert": ("ai_edge_litert", "LiteRT interpreter for the int8 file (TensorFlow's tf.lite is used "
                       "without it)", "pip install ai-edge-litert"),
}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of a demo run (full: under 10 minutes on 2 cores, install included; quick: CI).

    The full sizes were cut to fit that budget, measured on a bare 2-core machine (synthetic data, ``make demo`` from
    a fresh clone): 8,000 training images, 8 + 8 epochs, 500 test images and Square-200 took 15 min 6 s in all
    (Square on the stochastic-ternary model alone 4 min 24 s); 6,000 images, 8 + 8 epochs, 400 test images and
    Square-100 took 10 min 31 s (84 s of it the install, 250 s training stq_jr); with 6 stq_jr epochs and 300 test
    images 10 min 52 s (Square on the stochastic-ternary model costs per query, not per image, and BatchNorm
    recalibration about 20 s): hence three budgets, Square-60 and 2,000 recalibration images. With these sizes and
    one trace per fit, ``make demo`` from a fresh clone took 8 min 2 s on 2 idle cores (install about 94 s, 62 s
    training the float model, 199 s stq_jr); on real CIFAR-10, where the zoo model replaces stq_jr, the demo took
    2 min 49 s.
    """

    n_train: int = 6000
    n_test: int = 300
    float_epochs: int = 8
    robust_epochs: int = 6
    eps: tuple = (2 / 255, 4 / 255, 8 / 255)
    attacks: tuple = ("fgsm", "pgd", "square")
    pgd_steps: int = 10
    square_queries: int = 60
    n_tflm: int = 100
    n_file_attack: int = 100

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(n_train=384, n_test=48, float_epochs=1, robust_epochs=1, eps=(2 / 255, 8 / 255), pgd_steps=3,
                   square_queries=20, n_tflm=8, n_file_attack=16)


def optional_pieces() -> dict[str, bool]:
    """Which optional packages of the demo are installed (looked up without importing them)."""
    return {name: importlib.util.find_spec(module) is not None for name, (module, _, _) in OPTIONAL.items()}


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


def find_demo_data(data_dir: str | None, cfg: DemoConfig, verbose: int = 1, download: bool = False) -> tuple:
    """``((x_train, y_train), (x_test, y_test), description, synthetic)`` for the demo.

    Raises:
        DataNotFoundError: ``data_dir`` was given explicitly but holds no CIFAR-10 (an explicit folder that is
            wrong is a mistake to report, not a reason to switch to synthetic data), or ``download`` failed.
    """
    from qrobust_keras.data import DataNotFoundError, download_cifar10, find_cifar10, load_cifar10

    try:
        kind, path = find_cifar10(data_dir)
    except DataNotFoundError as exc:
        if data_dir is not None:
            raise
        if download:
            kind, path = "pickle", download_cifar10(verbose)
        else:
            print(f"qrobust demo: CIFAR-10 not found ({exc})\nqrobust demo: using a small GENERATED image task "
                  "instead (labelled SYNTHETIC in every output); pass --download to fetch CIFAR-10 with Keras, or "
                  "--data-dir to use your copy", file=sys.stderr)
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


# the robust model the demo shows on real CIFAR-10 (trained for hours; the demo loads it instead of training one)
ZOO_MODEL = "resnet8_int4_at2"


def _robust_from_zoo(verbose: int) -> tuple[Any, dict] | None:
    """The zoo's robust ResNet-8 and what the report says about it; None (with the reason printed) when it cannot
    be loaded, so that the demo trains its own robust model instead."""
    from qrobust_keras import zoo
    from qrobust_keras.zoo.cards import suite_status

    try:
        model, card = zoo.load(ZOO_MODEL), zoo.card(ZOO_MODEL)
    except Exception as exc:  # noqa: BLE001 - a broken install must not stop the demo; it trains instead
        _log(verbose, f"the zoo model {ZOO_MODEL} could not be loaded ({type(exc).__name__}: {exc}); training "
                      "stq_jr instead")
        return None
    return model, {"zoo": ZOO_MODEL, "clean_accuracy": card.get("clean_accuracy"),
                   "robust_accuracy": card.get("robust_accuracy", {}), "suite": suite_status(card),
                   "eval_samples": card.get("eval_samples")}


def _train(cfg: DemoConfig, train: tuple, test: tuple, out: str, run_info: dict, verbose: int, tag: str,
           robust: bool = True) -> tuple:
    """Train the float model and, when ``robust``, the ``stq_jr`` model: ``({label: model}, {label: seconds})``."""
    from qrobust_keras.recipes import FINAL_MODEL, HISTORY_CSV, RUN_CONFIG, fit_recipe, get_recipe

    runs = {
        "float (mlcommons)": get_recipe("mlcommons", dataset="cifar10", epochs=cfg.float_epochs, batch_size=64,
                                        lr_schedule="constant"),
        "stq_jr": get_recipe("stq_jr", dataset="cifar10", epochs=cfg.robust_epochs, jr_warmup_epochs=1,
                             bn_recalibration=min(2000, cfg.n_train)),
    }
    if not robust:
        del runs["stq_jr"]
    models, timings = {}, {}
    for label, recipe in runs.items():
        _log(verbose, f"training {label}{tag}: {recipe.epochs} epochs of {len(train[0])} images")
        start = time.time()
        run_dir = os.path.join(out, "runs", recipe.name)
        for name in (FINAL_MODEL, RUN_CONFIG, HISTORY_CSV):  # a demo always trains afresh
            if os.path.exists(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
        models[label] = fit_recipe(recipe, train, test, run_dir, verbose=0, run_info=run_info)
        timings[label] = round(time.time() - start, 1)
    return models, timings


def run_demo(data_dir: str | None = None, out: str = "demo_report", quick: bool = False, verbose: int = 1,
             config: DemoConfig | None = None, download: bool = False) -> int:
    """Run the demo and write the report folder; returns the CLI exit status (0, or 1 when a step after training
    failed: the report then says which, with everything computed before it).

    Args:
        data_dir: CIFAR-10 folder (pickle batches or a class-folder image tree); None searches
            ``$QROBUST_DATA_DIR`` and the Keras cache, then falls back to the synthetic task.
        out: report folder (created).
        quick: tiny sizes for CI (a few hundred images, one epoch, few attack steps).
        verbose: 0 silent, 1 progress lines.
        config: explicit sizes (overrides ``quick``).
        download: fetch CIFAR-10 with Keras when no copy is found (instead of the synthetic task).
    """
    from qrobust_keras.evaluation import format_eps, run_attacks

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    t0 = time.time()
    have = optional_pieces()
    skipped = [f"{OPTIONAL[name][1]}: `{name}` is not installed; add it with `{OPTIONAL[name][2]}` (or `pip install "
               "'qrobust-keras[tflite]'`)" for name, ok in have.items() if not ok]
    for line in skipped:
        _log(verbose, "skipping " + line)
    train, test, source, synthetic = find_demo_data(data_dir, cfg, verbose, download)
    os.makedirs(out, exist_ok=True)
    tag = " [SYNTHETIC]" if synthetic else ""
    _log(verbose, f"data: {source}; {len(train[0])} training and {len(test[0])} test images")
    x_test, y_test = test[0].astype(np.float32) / 255.0, test[1]
    results: dict[str, Any] = {"data": source, "synthetic": synthetic, "quick": quick,
                               "config": dataclasses.asdict(cfg), "optional": have, "skipped": skipped,
                               "failed": [], "evaluations": {}, "export": None, "tflm_footprint": None,
                               "tflm_check": None}
    run_info = {"source": source, "synthetic": synthetic, "n_train": len(train[0]), "n_test": len(test[0])}
    zoo_model = None if synthetic else _robust_from_zoo(verbose)
    if synthetic:
        _log(verbose, f"the zoo's robust model ({ZOO_MODEL}) needs real CIFAR-10 test images; training stq_jr on "
                      "the synthetic task to show the training workflow instead")
    models, results["train_seconds"] = _train(cfg, train, test, out, run_info, verbose, tag, robust=zoo_model is None)
    if zoo_model is not None:
        slug, robust = ZOO_MODEL, f"{ZOO_MODEL} (zoo)"
        models[robust] = zoo_model[0]
        results["robust_model"] = {"label": robust, "source": "zoo", **zoo_model[1]}
        _log(verbose, f"robust model: {ZOO_MODEL} from the zoo (card: qrobust zoo show {ZOO_MODEL})")
    else:
        slug = robust = "stq_jr"
        results["robust_model"] = {"label": robust, "source": "trained here", "recipe": "stq_jr"}

    def step(name: str, fn) -> Any:
        # A late step that fails is reported, never allowed to lose what the earlier steps computed.
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - recorded in the report and the exit status
            results["failed"].append(f"{name}: {type(exc).__name__}: {exc}")
            _log(verbose, f"FAILED {name}: {type(exc).__name__}: {exc}")
            if verbose >= 2:
                traceback.print_exc()
            return None

    for label, model in models.items():
        _log(verbose, f"attacking {label} with {', '.join(cfg.attacks)} at eps "
                      f"{', '.join(format_eps(e) for e in cfg.eps)}")
        ev = step(f"attacking {label}", lambda: run_attacks(model, "keras", x_test, y_test, list(cfg.attacks),
                                                            list(cfg.eps), steps=cfg.pgd_steps,
                                                            queries=cfg.square_queries, seed=0))
        if ev is not None:
            results["evaluations"][label] = ev
    tfl_path = os.path.join(out, f"{slug}_int8.tflite")
    _log(verbose, f"exporting {robust} to an int8 TFLite file")
    info = step("int8 export", lambda: _export(models[robust], tfl_path, train[0][:500], x_test, y_test))
    if info is not None:
        results["export"] = info.to_dict()
        runtime = "litert" if have["ai-edge-litert"] else "tflite"
        if have["tflite-micro"]:
            results["tflm_footprint"] = step("TFLite Micro footprint", lambda: _footprint(tfl_path))
            results["tflm_check"] = step("TFLite Micro check", lambda: _tflm_check(tfl_path, runtime, x_test, y_test,
                                                                                   cfg.n_tflm))
        _log(verbose, f"attacking the int8 file: {', '.join(cfg.attacks)} (white-box ones transferred from its "
                      f"Keras model, black-box ones on the file)")
        m = min(cfg.n_file_attack, len(x_test))
        ev = step("attacking the int8 file", lambda: _attack_file(tfl_path, runtime, x_test[:m], y_test[:m], cfg,
                                                                  models[robust]))
        if ev is not None:
            results["evaluations"][f"{robust} int8 file"] = ev
    results["total_seconds"] = round(time.time() - t0, 1)
    report = _write_report(results, out, tfl_path if info is not None else None)
    if verbose:
        print(open(report, encoding="utf-8").read())
    print(f"qrobust demo: report written to {os.path.abspath(report)}{tag}"
          + (f"; {len(results['failed'])} step(s) FAILED" if results["failed"] else ""))
    return 1 if results["failed"] else 0


def _export(model: Any, path: str, rep_images: np.ndarray, x_test: np.ndarray, y_test: np.ndarray):
    from qrobust_keras.export import export_tflite

    return export_tflite(model, path, representative_data=rep_images.astype(np.float32) / 255.0,
                         fidelity_data=(x_test, y_test), overwrite=True)


def _footprint(path: str) -> dict:
    from qrobust_keras.export import tflm_footprint

    return dataclasses.asdict(tflm_footprint(path))


def _tflm_check(path: str, runtime: str, x: np.ndarray, y: np.ndarray, n: int) -> dict:
    """The file in TFLite Micro against the runtime's default (optimized) and reference kernels, on ``n`` images."""
    from qrobust_keras.export.fidelity import compare_runtimes

    k = min(n, len(x))
    return {"runtime": runtime, **compare_runtimes(path, x[:k], y[:k], runtimes=(runtime, f"{runtime}-reference"))}


def _attack_file(path: str, runtime: str, x: np.ndarray, y: np.ndarray, cfg: DemoConfig, source) -> dict:
    """The file under the demo's attacks: white-box ones crafted on its Keras model and scored on the file
    (transfer), Square on the file itself, per-sample worst case. Square alone would only bound robust accuracy
    from above, which is how a deployed file gets misread as the most robust model."""
    from qrobust_keras.evaluation import run_attacks
    from qrobust_keras.export import TFLiteModel

    # scored on the reference kernels (what TFLite Micro computes), searched on the optimized ones (faster)
    return run_attacks(TFLiteModel(path, runtime=runtime, kernels="reference"), "tflite", x, y, list(cfg.attacks),
                       list(cfg.eps), steps=cfg.pgd_steps, queries=cfg.square_queries, seed=0, source_model=source,
                       search_model=TFLiteModel(path, runtime=runtime))


def _write_report(results: dict, out: str, tfl_path: str | None) -> str:
    from qrobust_keras._files import atomic_write
    from qrobust_keras.evaluation import plot_accuracy_vs_eps

    png = None
    if results["evaluations"]:
        try:
            png = os.path.basename(plot_accuracy_vs_eps(
                results["evaluations"], os.path.join(out, "accuracy_vs_eps.png"),
                title=f"worst-case accuracy vs eps{' (SYNTHETIC data)' if results['synthetic'] else ''}"))
        except Exception as exc:  # noqa: BLE001 - the markdown and JSON are still written
            results["failed"].append(f"plot: {type(exc).__name__}: {exc}")
    atomic_write(os.path.join(out, "results.json"), json.dumps(results, indent=2, default=str))
    report = os.path.join(out, "report.md")
    atomic_write(report, _markdown(results, png, os.path.basename(tfl_path) if tfl_path else None))
    return report


def _markdown(r: dict, png: str | None, tfl: str | None) -> str:
    syn = r["synthetic"]
    lines = ["# qrobust demo report" + (" - SYNTHETIC DATA" if syn else ""), ""]
    if syn:
        lines += ["> **Synthetic data**: no CIFAR-10 copy was found, so every number below is measured on a "
                  "generated grating task and says nothing about CIFAR-10. Pass `--download` to fetch CIFAR-10, or "
                  "`--data-dir` to use your copy.", ""]
    if r["failed"]:
        lines += ["> **Failed steps** (everything computed before them is below):", ""] + \
                 [f"> - {line}" for line in r["failed"]] + [""]
    if r["skipped"]:
        lines += ["Skipped (optional packages missing):", ""] + [f"- {line}" for line in r["skipped"]] + [""]
    lines += [f"Data: {r['data']}. Training seconds: " + ", ".join(f"{k} {v} s" for k, v in r["train_seconds"].items())
              + f"; total {r['total_seconds']} s." + (" Quick (CI) sizes." if r["quick"] else ""),
              "", "Minutes of training on a subset: these numbers show the workflow, not the full recipes' results "
              "(docs/reproduction.md). Attacks: quick settings (not the standard suite).", ""]
    zoo = r.get("robust_model") or {}
    if zoo.get("source") == "zoo":
        card = ", ".join(f"{b} {100 * v:.1f}%" for b, v in (zoo.get("robust_accuracy") or {}).items())
        lines += [f"The robust model is the zoo's `{zoo['zoo']}`, loaded, not trained here. Its card (`qrobust zoo "
                  f"show {zoo['zoo']}`), measured under the {zoo.get('suite')} suite on {zoo.get('eval_samples')} "
                  f"exact test images: {100 * (zoo.get('clean_accuracy') or 0):.1f}% clean; worst case {card}.", ""]
    if r["evaluations"]:
        labels = list(next(iter(r["evaluations"].values()))["worst"])
        lines += ["## Robust accuracy (per attack; worst case = correct under every attack)", "",
                  "| model | attack | clean | " + " | ".join(f"eps {lab}" for lab in labels) + " |",
                  "|---|---|---|" + "---|" * len(labels)]
        for model, ev in r["evaluations"].items():
            for name, row in ev["results"].items():
                lines.append(f"| {model} | {name} | {100 * ev['clean']:.1f}% | " +
                             " | ".join(f"{100 * row[lab]:.1f}%" for lab in labels) + " |")
            worst = "black-box only: upper bound" if ev.get("upper_bound") else "**worst case**"
            lines.append(f"| {model} | {worst} | {100 * ev['clean']:.1f}% | " +
                         " | ".join(f"**{100 * ev['worst'][lab]:.1f}%**" for lab in labels) + " |")
        bounds = [f"{m}: black-box only, an upper bound on robust accuracy" for m, ev in r["evaluations"].items()
                  if ev.get("upper_bound")]
        lines += [""] + [f"- {b}; its Keras model's white-box worst case is the honest number." for b in bounds]
    if png:
        lines += ["", f"![accuracy vs eps]({png})"]
    ex, fp, tc = r["export"], r["tflm_footprint"], r["tflm_check"]
    if ex:
        robust = r.get("robust_model", {}).get("label", "stq_jr")
        lines += ["", f"## Deployment ({robust}, int8)", "", "| | |", "|---|---|", f"| file | `{tfl}` |",
                  f"| size (flash) | {ex['size_bytes']:,} bytes |",
                  f"| argmax agreement Keras vs int8 file | {100 * (ex['agreement'] or 0):.1f}% on {ex['n_fidelity']} "
                  "images |",
                  f"| accuracy Keras / int8 file | {100 * (ex['accuracy_keras'] or 0):.1f}% / "
                  f"{100 * (ex['accuracy_tflite'] or 0):.1f}% |"]
        if fp:
            lines += [f"| TFLite Micro arena | {fp['arena_bytes']:,} bytes |" if fp.get("arena_bytes") else
                      "| TFLite Micro arena | not measured |",
                      f"| all ops supported by TFLite Micro | {fp['all_ops_supported']} |"]
        else:
            lines.append("| TFLite Micro arena | skipped (tflite-micro not installed, or the step failed) |")
        for kernels, name in (("default", ""), ("reference", "-reference")) if tc else ():
            row = tc.get(tc["runtime"] + name)
            if row:
                lines.append(f"| TFLite Micro vs {tc['runtime']} ({kernels} kernels): argmax agreement | "
                             f"{100 * row['agreement']:.1f}% on {tc['samples']} images ({row['disagreements']} "
                             f"disagreements, {row['tied_disagreements']} of them top-score ties; at most "
                             f"{row['max_code_diff']} output codes apart) |")
        lines += ["| MLCommons int8 ResNet-8 for comparison | 98,496 bytes, arena 55,984 bytes |"]
    return "\n".join(lines) + "\n"
