"""The ``qrobust`` command: train, attack/evaluate, export, report, demo.

Example::

    qrobust demo --data-dir ../shared/data/cifar10
    qrobust train --model resnet8 --dataset cifar10 --recipe stq_jr --data-dir D --epochs 30 --out run/
    qrobust evaluate run/model.h5 --dataset cifar10 --data-dir D --attacks fgsm,pgd,square --eps 2/255,8/255 \\
        -n 500 --out report/
    qrobust export run/model.h5 --int8 --representative-data D --c-array --out export/
    qrobust report run/

Every command has ``--help``. Budgets (``--eps``) accept fractions (``8/255``) and decimals (``0.03``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from fractions import Fraction

from qrobust_keras._files import atomic_write, new_figure, save_figure

__all__ = ["main", "build_parser", "parse_eps", "parse_eps_list", "parse_policy", "load_dataset", "DataSpec"]

WHITE_BOX = ("fgsm", "bim", "pgd", "pgd-cw", "mim", "apgd", "apgd-ce", "apgd-dlr", "cw_l2")
BLACK_BOX = ("square", "spsa")
ATTACKS = WHITE_BOX + BLACK_BOX


# ---------------------------------------------------------------------------------------------------------------------
# Argument parsing helpers
# ---------------------------------------------------------------------------------------------------------------------
def parse_eps(text: str) -> float:
    """Parse one budget: ``"8/255"``, ``"0.03"``, ``"3e-2"`` or ``"2"`` (only when it is <= 1 after parsing).

    Raises:
        ValueError: text that is not a number or fraction, a zero denominator, or a value outside (0, 1] (images
            are in [0, 1]; ``8`` suggests ``8/255``).
    """
    raw = str(text).strip()
    if not raw:
        raise ValueError("eps is empty; give a number like 0.03 or a fraction like 8/255")
    try:
        if raw.count("/") > 1:
            raise ValueError("more than one '/'")
        if "/" in raw:
            num, den = raw.split("/", 1)
            value = float(Fraction(num.strip()) / Fraction(den.strip()))
        else:
            value = float(Fraction(raw))
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"eps={raw!r} is not a number or fraction; accepted forms: 8/255, 0.03, 3e-2") from exc
    if not 0 < value <= 1:
        hint = f" (did you mean {raw}/255?)" if value > 1 and "/" not in raw else ""
        raise ValueError(f"eps must be in (0, 1] for inputs in [0, 1]; got eps={raw!r} = {value:g}{hint}")
    return value


def parse_eps_list(text: str) -> list[float]:
    """Comma-separated budgets, e.g. ``"1/255,2/255,8/255"`` -> sorted unique floats."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--eps needs at least one budget; got {text!r}")
    return sorted(set(parse_eps(p) for p in parts))


def parse_attacks(text: str) -> list[str]:
    names = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise ValueError(f"--attacks got unknown name(s) {unknown or [text]}; accepted: {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


def parse_policy(text: str) -> dict:
    """A quantization policy from the command line: a spec name (``int4``) or a JSON object of
    :class:`~qrobust_keras.quantization.QuantPolicy` fields, e.g.
    ``{"kernel": "int4", "activation": "int4", "overrides": {"conv_1": "int8", "logits": "int8"}}``.
    Returns the policy's config dict."""
    import json

    from qrobust_keras.quantization import QuantPolicy

    text = str(text).strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--policy is not valid JSON ({exc.msg} at character {exc.pos}); got {text!r}") from None
    else:
        spec = text
    try:
        return QuantPolicy.from_any(spec).get_config()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"--policy {text!r} is not a quantization policy: {exc}. Give a spec name or a JSON object "
                         "with kernel/bias/activation/batchnorm/overrides") from None


def _usage_checked(parse):
    """An argparse ``type`` that turns ``parse``'s ValueError into a usage error carrying the same message."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return convert


def eps_label(eps: float) -> str:
    """``8/255`` for multiples of 1/255, else ``0.03``."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------
class DataSpec:
    """A loaded dataset: ``train``/``test`` as ``(x, y)`` (images uint8, features float32) and where it came from."""

    def __init__(self, name: str, train, test, source: str, synthetic: bool = False):
        self.name, self.train, self.test, self.source, self.synthetic = name, train, test, source, synthetic

    def describe(self) -> dict:
        return {"dataset": self.name, "source": self.source, "synthetic": self.synthetic,
                "n_train": int(len(self.train[0])), "n_test": int(len(self.test[0]))}


def _subset(xy, n, seed):
    import numpy as np

    x, y = xy
    if n is None or n >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[idx], y[idx]


def load_dataset(dataset: str, data_dir: str | None, *, source: str = "auto", n_train: int | None = None,
                 n_test: int | None = None, seed: int = 0, verbose: int = 1, need_train: bool = True) -> DataSpec:
    """Load ``cifar10`` / ``svhn`` / ``speech_commands`` for the CLI.

    CIFAR-10 follows :func:`qrobust_keras.data.find_cifar10` (``data_dir``, ``$QROBUST_DATA_DIR``, the Keras cache;
    ``source`` picks pickles or images). Speech Commands is split by speaker (train 70% / validation 10% / test
    20% of the clips, seed 0) with MFCC features. ``n_train``/``n_test`` keep a random subset (first ``n`` of a
    seeded permutation, kept in order).

    Raises:
        qrobust_keras.data.DataNotFoundError: nothing found (the message says where it looked).
    """
    from qrobust_keras import data as qdata

    if dataset == "cifar10":
        kind, path = qdata.find_cifar10(data_dir, source)
        train, test = qdata.load_cifar10(path, source=kind, verbose=verbose) if need_train or kind == "pickle" \
            else (None, None)
        if train is None:  # images, test only
            x, y, _ = qdata.load_image_folder(os.path.join(path, "test"), qdata.CIFAR10_CLASSES)
            train, test = (x[:0], y[:0]), (x, y)
        src = f"{'python batches' if kind == 'pickle' else 'images'} in {path}"
    elif dataset == "svhn":
        if data_dir is None:
            raise qdata.DataNotFoundError("SVHN needs --data-dir: a folder with train_32x32.mat and test_32x32.mat "
                                          "(http://ufldl.stanford.edu/housenumbers/)")
        if need_train:
            train, test = qdata.load_svhn(data_dir)
        else:
            test = qdata.load_svhn(data_dir, split="test")
            train = (test[0][:0], test[1][:0])
        src = f"SVHN .mat files in {data_dir}"
    elif dataset == "speech_commands":
        if data_dir is None:
            raise qdata.DataNotFoundError("Speech Commands needs --data-dir: the dataset folder or a folder holding "
                                          "test_set_v0.02")
        import numpy as np

        x, y, paths = qdata.load_speech_commands(data_dir, split="all", return_paths=True, verbose=verbose)
        parts = qdata.speaker_disjoint_split(paths, validation_fraction=0.1, test_fraction=0.2, seed=0)
        train = (x[parts["train"]].astype(np.float32), y[parts["train"]])
        test = (x[parts["test"]].astype(np.float32), y[parts["test"]])
        src = f"speaker-disjoint split (70/10/20, seed 0) of the clips in {data_dir}, MFCC features"
    else:
        raise ValueError(f"dataset must be one of cifar10, svhn, speech_commands; got dataset={dataset!r}")
    train = _subset(train, n_train, seed)
    test = _subset(test, n_test, seed + 1)
    return DataSpec(dataset, train, test, src)


def _to_float(x):
    import numpy as np

    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from qrobust_keras.recipes import fit_recipe, get_recipe

    recipe = get_recipe(args.recipe, model=args.model, dataset=args.dataset, epochs=args.epochs,
                        batch_size=args.batch_size, seed=args.seed, learning_rate=args.lr, policy=args.policy,
                        filters=args.filters)
    data = load_dataset(args.dataset, args.data_dir, source=args.source, n_train=args.train_samples,
                        n_test=args.val_samples, seed=args.seed, verbose=args.verbose)
    if args.verbose:
        print(f"qrobust train: recipe {recipe.name} for {recipe.model} on {data.source}: {len(data.train[0])} "
              f"training and {len(data.test[0])} validation samples, {recipe.epochs} epochs, batch "
              f"{recipe.batch_size}; run folder {args.out}")
    fit_recipe(recipe, data.train, data.test if len(data.test[0]) else None, args.out, verbose=args.verbose,
               run_info=data.describe(), init_weights=args.init_weights)
    if args.verbose:
        print(f"qrobust train: done; model {os.path.join(args.out, 'model.h5')}, history "
              f"{os.path.join(args.out, 'history.csv')}")
    return 0


def _load_any_model(path: str):
    """(kind, object): ``("keras", model)`` for .h5/.keras/SavedModel, ``("tflite", TFLiteModel)`` for .tflite."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"MODEL={path!r} does not exist; expected a .h5/.keras file, a SavedModel folder or "
                                "a .tflite file")
    if path.lower().endswith(".tflite"):
        from qrobust_keras.export import TFLiteModel

        return "tflite", TFLiteModel(path)
    from qrobust_keras.models import load_model

    return "keras", load_model(path, compile=False)


def run_attacks(model, kind: str, x, y, attacks: list[str], eps_list: list[float], *, steps: int | None = None,
                queries: int | None = None, seed: int = 0, verbose: int = 0, batch_size: int = 256,
                clip_range: tuple[float, float] = (0.0, 1.0), scale: str = "image") -> dict:
    """Robust accuracy of ``model`` per attack and budget, and the per-sample worst case over attacks.

    L-inf attacks run through :func:`qrobust_keras.evaluation.evaluate_robustness` (registry defaults of ``scale``;
    ``steps`` overrides the iterations of fgsm-family/APGD attacks, ``queries`` the Square budget). A sample counts
    as robust at ``eps`` under the worst case only when it is classified correctly clean and under every attack at
    that ``eps``. C&W-L2 minimizes the L2 distortion and has no L-inf budget: it runs once (registry defaults) and a
    sample counts as broken at ``eps`` when its C&W example is misclassified within L-inf distance ``eps``.

    Returns:
        ``{"n", "clean", "results": {attack: {eps_label: acc}}, "worst": {eps_label: acc}, "eps", "attacks":
        settings, "robustness_report": RobustnessReport.to_dict()}`` with accuracies in [0, 1]; with ``cw_l2``
        also ``"cw_l2_distortion"``: its success rate on the clean-correct samples and the mean/median L2 and L-inf
        distortion of the examples it found (input units).
    """
    import numpy as np

    from qrobust_keras.attacks import registry
    from qrobust_keras.evaluation import evaluate_robustness

    if kind == "tflite":
        white = [a for a in attacks if a in WHITE_BOX]
        if white:
            raise ValueError(f"attacks {white} need gradients; a .tflite file can only be attacked with black-box "
                             f"attacks ({', '.join(BLACK_BOX)}) or by transfer from its Keras model")
    lo, hi = clip_range
    linf = [registry.canonical_name(a) for a in attacks if a != "cw_l2"]
    overrides: dict = {}
    for name in linf:
        if steps is not None and name in ("bim", "pgd", "pgd-cw", "mim", "apgd-ce", "apgd-dlr", "spsa"):
            overrides[name] = {"steps": int(steps)}
        if queries is not None and name == "square":
            overrides[name] = {"queries": int(queries)}
    y = np.asarray(y)
    predict_model = model
    report = None
    if linf:
        report = evaluate_robustness(model, x, y, attacks=linf, eps=list(eps_list), seed=seed, verbose=verbose,
                                     attack_kwargs=overrides, scale=scale, clip_min=lo, clip_max=hi,
                                     batch_size=batch_size if kind == "keras" else None)
        clean_ok = np.asarray(report.clean_correct, bool)
        robust = {e: np.asarray(mask, bool) for e, mask in zip(eps_list, report.robust)}
        results = {name: {eps_label(e): float(acc) for e, acc in zip(eps_list, report.accuracy[name])}
                   for name in linf}
        settings = {name: {eps_label(e): registry.attack_kwargs(name, eps=e, scale=scale,
                                                                overrides=overrides.get(name)) for e in eps_list}
                    for name in linf}
    else:
        scores = model.predict(x, batch_size=batch_size, verbose=0) if kind == "keras" else model.predict(x)
        clean_ok = scores.argmax(1) == y
        robust = {e: clean_ok.copy() for e in eps_list}
        results, settings = {}, {}
    distortion = None
    if "cw_l2" in attacks:
        x_adv = registry.run_attack("cw_l2", predict_model, x, y, None, norm="2", scale=scale, seed=seed,
                                    clip_min=lo, clip_max=hi, batch_size=batch_size)
        x_adv = x_adv[0] if isinstance(x_adv, tuple) else x_adv
        fooled = predict_model.predict(x_adv, batch_size=batch_size, verbose=0).argmax(1) != y
        delta = (x_adv - x).reshape(len(x), -1)
        dist = np.abs(delta).max(1)
        l2 = np.sqrt(np.square(delta).sum(1))
        broken = clean_ok & fooled
        # Carlini & Wagner 2017 report minimum-norm attacks by success rate and distortion of the found examples.
        distortion = {"attacked": int(clean_ok.sum()), "success": float(broken.sum() / max(clean_ok.sum(), 1))}
        for stat, fn in (("mean", np.mean), ("median", np.median)):
            distortion[f"{stat}_l2"] = float(fn(l2[broken])) if broken.any() else None
            distortion[f"{stat}_linf"] = float(fn(dist[broken])) if broken.any() else None
        results["cw_l2"] = {}
        for e in eps_list:
            ok = clean_ok & ~(fooled & (dist <= e + 1e-7))
            results["cw_l2"][eps_label(e)] = float(ok.mean())
            robust[e] &= ok
        settings["cw_l2"] = dict(registry.attack_kwargs("cw_l2", eps=None, scale=scale),
                                 note="L2 attack; broken at eps when misclassified within L-inf distance eps")
    out = {"n": int(len(x)), "clean": float(clean_ok.mean()), "results": results,
           "worst": {eps_label(e): float(robust[e].mean()) for e in eps_list}, "eps": [float(e) for e in eps_list],
           "attacks": settings, "robustness_report": None if report is None else report.to_dict()}
    if distortion is not None:
        out["cw_l2_distortion"] = distortion
    return out


def evaluation_markdown(ev: dict, title: str) -> str:
    labels = [eps_label(e) for e in ev["eps"]]
    lines = [f"## {title}", "", f"{ev['n']} samples; clean accuracy {100 * ev['clean']:.1f}%.", "",
             "| attack | " + " | ".join(f"eps {lab}" for lab in labels) + " |",
             "|---|" + "---|" * len(labels)]
    for name, row in ev["results"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[lab]:.1f}%" for lab in labels) + " |")
    lines.append("| **worst case** | " + " | ".join(f"**{100 * ev['worst'][lab]:.1f}%**" for lab in labels) + " |")
    cw = ev.get("cw_l2_distortion")
    if cw:
        fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        lines += ["", f"C&W-L2 (minimum norm): fools {100 * cw['success']:.1f}% of the {cw['attacked']} correctly "
                  f"classified samples; distortion of the examples found: L2 median {fmt(cw['median_l2'])} / mean "
                  f"{fmt(cw['mean_l2'])}, L-inf median {fmt(cw['median_linf'])} / mean {fmt(cw['mean_linf'])} "
                  "(input units)."]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_eps(evaluations: dict, path: str, title: str = "robust accuracy vs eps") -> str:
    """One line per model (worst case) and dashed lines per attack; written atomically as PNG."""
    fig = new_figure((6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for label, ev in evaluations.items():
        xs = [0.0] + [e * 255 for e in ev["eps"]]
        line, = ax.plot(xs, [100 * ev["clean"]] + [100 * ev["worst"][eps_label(e)] for e in ev["eps"]], "o-",
                        label=f"{label} (worst case)")
        for name, row in ev["results"].items():
            ax.plot(xs, [100 * ev["clean"]] + [100 * row[eps_label(e)] for e in ev["eps"]], "--", alpha=0.5,
                    color=line.get_color(), label=f"{label}: {name}")
    ax.set_xlabel("eps (x 1/255, L-inf)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    kind, model = _load_any_model(args.model)
    attacks = args.attacks or (["square"] if kind == "tflite" else ["fgsm", "pgd", "square"])
    data = load_dataset(args.dataset, args.data_dir, source=args.source, n_test=args.n, seed=args.seed,
                        verbose=args.verbose, need_train=False)
    x, y = data.test
    x = _to_float(x)
    clip = (0.0, 1.0)
    if args.dataset == "speech_commands":
        clip = (float(x.min()), float(x.max()))
    if args.verbose:
        print(f"qrobust {args.command}: {args.model} ({kind}) on {len(x)} samples of {data.source}; attacks "
              f"{', '.join(attacks)}; eps {', '.join(eps_label(e) for e in args.eps)}")
    ev = run_attacks(model, kind, x, np.asarray(y), attacks, args.eps, steps=args.steps, queries=args.queries,
                     seed=args.seed, verbose=max(0, args.verbose - 1), clip_range=clip,
                     scale="audio" if args.dataset == "speech_commands" else "image")
    ev.update(model=os.path.abspath(args.model), model_kind=kind, data=data.describe())
    os.makedirs(args.out, exist_ok=True)
    name = os.path.splitext(os.path.basename(os.path.normpath(args.model)))[0]
    _write_json(os.path.join(args.out, "evaluation.json"), ev)
    md = evaluation_markdown(ev, f"{name} on {args.dataset}")
    atomic_write(os.path.join(args.out, "evaluation.md"), md)
    plot_accuracy_vs_eps({name: ev}, os.path.join(args.out, "accuracy_vs_eps.png"))
    print(md)
    print(f"qrobust {args.command}: report in {os.path.abspath(args.out)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from qrobust_keras import export as qexport
    from qrobust_keras.models import load_model

    model = load_model(args.model, compile=False)
    rep = labels = None
    if args.representative_data:
        if os.path.isfile(args.representative_data) and args.representative_data.endswith(".npy"):
            rep = np.load(args.representative_data)
        else:
            data = load_dataset(args.dataset, args.representative_data, n_train=args.samples, n_test=args.samples,
                                seed=0, verbose=args.verbose)
            rep = _to_float(data.train[0] if len(data.train[0]) else data.test[0])
            fid_x, labels = _to_float(data.test[0]), data.test[1]
    elif args.int8:
        raise ValueError("--int8 needs --representative-data: a dataset folder (see --dataset) or a .npy of inputs")
    os.makedirs(args.out, exist_ok=True)
    base = os.path.splitext(os.path.basename(os.path.normpath(args.model)))[0]
    path = os.path.join(args.out, base + (".int8" if args.int8 else "") + ".tflite")
    kwargs = {}
    if labels is not None:
        kwargs = dict(fidelity_data=(fid_x, labels))
    info = qexport.export_tflite(model, path, representative_data=rep, int8=args.int8, overwrite=True, **kwargs)
    summary = {"export": info.to_dict()}
    if hasattr(qexport, "tflm_footprint"):
        try:
            summary["tflm"] = _as_dict(qexport.tflm_footprint(path))
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            summary["tflm_error"] = f"{type(exc).__name__}: {exc}"
    if args.c_array:
        if not hasattr(qexport, "to_c_array"):
            raise RuntimeError("--c-array needs qrobust_keras.export.to_c_array, which this installation lacks")
        summary["c_array"] = _as_dict(qexport.to_c_array(path, args.out))
    _write_json(os.path.join(args.out, "export.json"), summary)
    print(info.to_markdown())
    if "tflm" in summary:
        print(f"TFLite Micro: {summary['tflm']}")
    print(f"qrobust export: wrote {path}")
    return 0


def _as_dict(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, (tuple, list)):
        return [str(o) for o in obj]
    return str(obj)


def plot_history(rows: list[dict], path: str) -> str:
    """Loss and accuracy curves (train and validation) of a history CSV, as PNG (written atomically)."""
    epochs = [r["epoch"] + 1 for r in rows]
    fig = new_figure((9, 3.5))
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "o-"), ("val_", "s--")):
            vals = [r.get(prefix + key) for r in rows]
            if any(v is not None for v in vals):
                ax.plot([e for e, v in zip(epochs, vals) if v is not None], [v for v in vals if v is not None],
                        style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def write_run_report(run_dir: str, out: str | None = None) -> str:
    """Write a markdown report of a run folder: its recipe, the training history (table and ``training.png``) and
    every ``evaluation.json`` found below it (tables and ``accuracy_vs_eps.png``).

    Returns:
        The path of the markdown file.

    Raises:
        FileNotFoundError: ``run_dir`` missing, or holding neither history.csv nor any evaluation.json.
    """
    import glob

    from qrobust_keras.recipes import HISTORY_CSV, RUN_CONFIG, read_history

    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"RUN_DIR={run_dir!r} is not a folder; pass the --out folder of `qrobust train`")
    out = out or os.path.join(run_dir, "report.md")
    history_path = os.path.join(run_dir, HISTORY_CSV)
    evals = sorted(glob.glob(os.path.join(run_dir, "**", "evaluation.json"), recursive=True))
    if not os.path.exists(history_path) and not evals:
        raise FileNotFoundError(f"RUN_DIR={run_dir!r} holds neither {HISTORY_CSV} nor any evaluation.json; run "
                                "`qrobust train --out RUN_DIR` or `qrobust evaluate ... --out RUN_DIR/eval` first")
    lines = [f"# Run report: {os.path.abspath(run_dir)}", ""]
    config_path = os.path.join(run_dir, RUN_CONFIG)
    if os.path.exists(config_path):
        with open(config_path) as f:
            config = json.load(f)
        recipe = config.get("recipe", {})
        info = config.get("run_info", {})
        lines += ["## Recipe", "", f"- recipe **{recipe.get('name')}**, model {recipe.get('model')}, dataset "
                  f"{recipe.get('dataset')}; status: {config.get('status')}",
                  f"- data: {info.get('source', '?')} ({info.get('n_train', '?')} train / {info.get('n_test', '?')} "
                  f"validation samples){' - SYNTHETIC' if info.get('synthetic') else ''}",
                  f"- epochs {recipe.get('epochs')}, batch {recipe.get('batch_size')}, {recipe.get('optimizer')} lr "
                  f"{recipe.get('learning_rate')} ({recipe.get('lr_schedule')}), JR weight {recipe.get('jr_weight')} "
                  f"({recipe.get('jr_layers')}), AT eps {recipe.get('at_eps')}",
                  f"- policy: `{json.dumps(recipe.get('policy'))}`", ""]
    if os.path.exists(history_path):
        rows = read_history(history_path)
        png = plot_history(rows, os.path.join(os.path.dirname(out) or ".", "training.png"))
        total = sum(r.get("seconds", 0.0) for r in rows)
        lines += ["## Training", "", f"{len(rows)} finished epochs, {total / 60:.1f} min of training.", "",
                  "| epoch | loss | accuracy | val_loss | val_accuracy | jr | lr | seconds |",
                  "|---|---|---|---|---|---|---|---|"]

        def f(v, pct=False):
            return "-" if v is None else (f"{100 * v:.1f}%" if pct else f"{v:.4g}")

        for r in rows:
            lines.append(f"| {r['epoch'] + 1} | {f(r.get('loss'))} | {f(r.get('accuracy'), True)} | "
                         f"{f(r.get('val_loss'))} | {f(r.get('val_accuracy'), True)} | {f(r.get('jr'))} | "
                         f"{f(r.get('lr'))} | {f(r.get('seconds'))} |")
        lines += ["", f"![training curves]({os.path.relpath(png, os.path.dirname(out) or '.')})", ""]
    loaded = {}
    for path in evals:
        with open(path) as fh:
            ev = json.load(fh)
        label = os.path.relpath(os.path.dirname(path), run_dir)
        label = os.path.basename(ev.get("model", "")) or label if label == "." else label
        loaded[label] = ev
        lines.append(evaluation_markdown(ev, f"Evaluation: {label}"))
    if loaded:
        png = plot_accuracy_vs_eps(loaded, os.path.join(os.path.dirname(out) or ".", "accuracy_vs_eps.png"))
        lines += [f"![accuracy vs eps]({os.path.relpath(png, os.path.dirname(out) or '.')})", ""]
    atomic_write(out, "\n".join(lines) + "\n")
    return out


def _cmd_report(args: argparse.Namespace) -> int:
    path = write_run_report(args.run_dir, out=args.out)
    print(f"qrobust report: {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from qrobust_keras.demo import run_demo

    return run_demo(data_dir=args.data_dir, out=args.out, quick=args.quick, verbose=args.verbose)


# ---------------------------------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", type=int, default=1, help="0 = silent, 1 = progress (default), 2 = more")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling, initialisation and attacks (default 0)")


def _add_data(p: argparse.ArgumentParser, required_dataset: bool = True) -> None:
    p.add_argument("--dataset", choices=["cifar10", "svhn", "speech_commands"], default="cifar10",
                   help="dataset (default cifar10)")
    p.add_argument("--data-dir", default=None,
                   help="dataset folder; CIFAR-10 default: $QROBUST_DATA_DIR, then the Keras cache")
    p.add_argument("--source", choices=["auto", "pickle", "images"], default="auto",
                   help="CIFAR-10 files to read: exact python batches (preferred by auto) or an image tree")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qrobust", description="Robust tiny quantized Keras models for MCUs: "
                                     "train recipes, attack honestly, export int8 TFLite.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a named recipe into a resumable run folder",
                       description="Train a recipe (mlcommons, stq_jr, stq_jr_at, int4_at). The run folder gets "
                                   "run_config.json, history.csv, last.h5 after every epoch, backup/ "
                                   "(BackupAndRestore: rerun the same command to resume a killed run) and model.h5.")
    p.add_argument("--model", choices=["resnet8", "ds_cnn"], default=None,
                   help="architecture (default: resnet8 for images, ds_cnn for speech_commands)")
    # a literal, not recipes.RECIPES: `qrobust --help` must not import TensorFlow (tests check they are equal)
    p.add_argument("--recipe", choices=["mlcommons", "stq_jr", "stq_jr_at", "int4_at"], default="stq_jr",
                   help="training recipe (default stq_jr; see qrobust_keras.recipes)")
    _add_data(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the recipe's)")
    p.add_argument("--train-samples", type=int, default=None, help="train on a random subset of this size")
    p.add_argument("--val-samples", type=int, default=None,
                   help="validate on a random subset of the test split of this size (0: no validation)")
    p.add_argument("--out", required=True, help="run folder (created; reuse it to resume)")
    p.add_argument("--filters", type=int, default=None, metavar="F",
                   help="network width: ResNet-8 stacks of F, 2F, 4F filters, DS-CNN channels (default: the MLCommons "
                        "model's 16 / 64, the only width the official weights fit; wider needs --init-weights none)")
    p.add_argument("--policy", type=_usage_checked(parse_policy), default=None,
                   help="layer bit-widths instead of the recipe's: a spec name (float, int8, int4, int2, ternary, "
                        "stochastic_ternary, binary, stochastic_binary) or a JSON QuantPolicy, e.g. '{\"kernel\": "
                        "\"int4\", \"activation\": \"int4\", \"overrides\": {\"conv_1\": \"int8\"}}'")
    p.add_argument("--init-weights", default=None, metavar="MODEL",
                   help="start from the weights of this saved model (layer names must match), e.g. an stq_jr "
                        "run's model.h5 for adversarial fine-tuning with --recipe stq_jr_at; 'mlcommons' or "
                        "'mlcommons:DIR' starts from the official MLCommons Tiny float weights (DIR defaults to "
                        "$QROBUST_MLCOMMONS_DIR); 'none' trains from random weights (default: the recipe's start, "
                        "'mlcommons' for int4_at, random weights for the others)")
    _add_common(p)
    p.set_defaults(func=_cmd_train)

    for name, text in (("attack", "attack a model and report robust accuracy"),
                       ("evaluate", "evaluate clean and robust accuracy (same as attack)")):
        p = sub.add_parser(name, help=text,
                           description=f"{text[0].upper() + text[1:]}. MODEL may be .h5, .keras, a SavedModel "
                                       "folder or .tflite (black-box attacks only, run on the file itself). Writes "
                                       "evaluation.json, evaluation.md and accuracy_vs_eps.png to --out.")
        p.add_argument("model", metavar="MODEL", help="model file or SavedModel folder")
        _add_data(p)
        p.add_argument("--attacks", type=_usage_checked(parse_attacks), default=None,
                       help=f"comma-separated attacks from {', '.join(ATTACKS)} (default fgsm,pgd,square; square "
                            "for .tflite)")
        p.add_argument("--eps", type=_usage_checked(parse_eps_list), default=parse_eps_list("2/255,8/255"),
                       help="comma-separated L-inf budgets as fractions or decimals (default 2/255,8/255)")
        p.add_argument("-n", "--n", type=int, default=500, help="test samples (default 500; first n of a seeded "
                                                                "permutation)")
        p.add_argument("--steps", type=int, default=None,
                       help="iterations of PGD/BIM/MIM/APGD/SPSA (default: the attack registry's: PGD 20, APGD 100)")
        p.add_argument("--queries", type=int, default=None,
                       help="Square attack queries per sample (default: the registry's 1000)")
        p.add_argument("--out", default="report", help="report folder (default report)")
        _add_common(p)
        p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="export a Keras model to (int8) TFLite, optionally as a C array",
                       description="Export MODEL (.h5/.keras/SavedModel) to TFLite. --int8 makes an integer-only "
                                   "file calibrated on --representative-data; --c-array also writes a C source "
                                   "file. Writes export.json with size, fidelity and the TFLite Micro footprint.")
    p.add_argument("model", metavar="MODEL", help="model file or SavedModel folder")
    p.add_argument("--int8", action="store_true", help="integer-only int8 file (needs --representative-data)")
    p.add_argument("--representative-data", default=None,
                   help="dataset folder (read as --dataset) or a .npy of model inputs for int8 calibration")
    p.add_argument("--dataset", choices=["cifar10", "svhn", "speech_commands"], default="cifar10",
                   help="dataset of --representative-data (default cifar10)")
    p.add_argument("--samples", type=int, default=500, help="calibration/fidelity samples (default 500)")
    p.add_argument("--c-array", action="store_true", help="also write the model as a C array")
    p.add_argument("--out", default="export", help="output folder (default export)")
    p.add_argument("--verbose", type=int, default=1, help="0 = silent, 1 = progress (default)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("report", help="markdown report and plots of a run folder",
                       description="Write RUN_DIR/report.md with training curves (history.csv -> training.png) "
                                   "and every evaluation.json found under RUN_DIR (-> accuracy_vs_eps.png).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="run folder of `qrobust train`")
    p.add_argument("--out", default=None, help="report file (default RUN_DIR/report.md)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="train, attack and report a float and a robust quantized ResNet-8",
                       description="Train a float and an stq_jr ResNet-8 briefly on CIFAR-10 (or, when no copy is "
                                   "found, on a generated image task labelled synthetic), attack both, export the "
                                   "robust one to int8, check it in TFLite Micro and write a report.")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (pickle batches or class-folder images); "
                                                    "default: $QROBUST_DATA_DIR, then the Keras cache")
    p.add_argument("--out", default="demo_report", help="report folder (default demo_report)")
    p.add_argument("--quick", action="store_true", help="a much smaller run (for CI)")
    p.add_argument("--verbose", type=int, default=1, help="0 = silent, 1 = progress (default)")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qrobust`` console script; returns the exit status.

    Errors a user can fix (missing data, bad arguments, missing files) print one ``qrobust: error: ...`` line and
    return 2 instead of a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from qrobust_keras.data.errors import DataNotFoundError

    try:
        return int(args.func(args) or 0)
    except (DataNotFoundError, FileNotFoundError, ValueError) as exc:
        print(f"qrobust {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
