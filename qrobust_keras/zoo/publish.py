"""Write a zoo entry from a trained model: the shipped files, then the card, computed from those files.

``publish`` copies the model into ``qrobust_keras/zoo/NAME/``, exports its int8 file with the library's exporter,
loads both back and measures on the evaluation set: clean and robust accuracy under the evaluation suite, the int8
file's accuracy and agreement, TFLite Micro against LiteRT, the flash and arena bytes; it reads the training facts
from the run folder and writes ``card.json`` last (atomically), with every file's sha256. So a card's numbers are
always those of the files beside it.

The entries of the library are described in :data:`~qrobust_keras.zoo.specs.SPECS` and published with::

    python -m qrobust_keras.zoo.publish resnet8_int4_at2 --run runs/resnet8_int4_at2 \\
        --cifar10 ../shared/data/cifar10 --train-data ../shared/data/cifar10-jpeg

Example (a tiny untrained model into a scratch zoo, on a few images, the quick suite):

>>> import numpy as np, qrobust_keras as qrk
>>> from qrobust_keras.zoo.publish import publish
>>> model = qrk.models.resnet8(policy="int4"); model.save("/tmp/qrk_r8.h5")
>>> x = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32"); y = np.arange(8) % 10
>>> card = publish("tiny", "/tmp/qrk_r8.h5", (x, y), dataset="cifar10", eps=[8 / 255], suite="quick",
...                representative_data=x, root="/tmp/qrk_zoo", overwrite=True, verbose=0)
>>> sorted(card["files"]), card["eval_samples"]
(['evaluation.json', 'export.json', 'model.h5', 'model.int8.tflite'], 8)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from typing import Any, Sequence

import numpy as np

from qrobust_keras import zoo
from qrobust_keras._files import atomic_folder, atomic_write
from qrobust_keras.zoo import cards
from qrobust_keras.zoo.specs import REFERENCE_SPECS, SPECS

__all__ = ["publish", "republish", "publish_reference", "dataset_sha256", "evaluate_targets", "SPECS",
           "REFERENCE_SPECS", "main"]


def dataset_sha256(path: str) -> str:
    """sha256 over every file below ``path`` (relative path and bytes, in sorted order): identifies the exact
    training data a card's model saw."""
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for file in sorted(files):
            full = os.path.join(folder, file)
            digest.update(os.path.relpath(full, path).replace(os.sep, "/").encode() + b"\0")
            digest.update(zoo.sha256_file(full).encode())
    return digest.hexdigest()


def evaluate_targets(card: dict[str, Any], targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target ``{"what", "metric", "min"}`` (metric ``clean_accuracy``, ``robust_accuracy/2/255`` or
    ``int8/agreement``) with its measured value and whether it is met, read from ``card``; ``met`` is None when
    the card does not hold the metric (a budget not yet measured), never a silent pass or fail."""
    out = []
    for target in targets:
        value: Any = card
        for key in target["metric"].split("/", 1) if target["metric"].startswith("robust_accuracy/") \
                else target["metric"].split("/"):
            value = value.get(key) if isinstance(value, dict) else None
        met = None if value is None else bool(float(value) >= float(target["min"]))
        out.append({"what": target["what"], "metric": target["metric"], "min": target["min"],
                    "measured": None if value is None else f"{100 * float(value):.1f}%", "met": met})
    return out


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU" if cpu else f"{os.cpu_count()} CPU cores"


def _training_facts(run_dir: str | None, train_data: str | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    from qrobust_keras.recipes.run import HISTORY_CSV, RUN_CONFIG, read_history

    if run_dir is None:
        return {}, None
    with open(os.path.join(run_dir, RUN_CONFIG), encoding="utf-8") as f:
        config = json.load(f)
    rows = read_history(os.path.join(run_dir, HISTORY_CSV))
    info = config.get("run_info", {})
    # Epochs count from the epoch index, not the rows: a run that crashed in an epoch's end-of-epoch callbacks and
    # was resumed from its backup lacks that epoch's row, and the card then says which epochs its times leave out.
    done = [int(r["epoch"]) for r in rows if "epoch" in r]
    epochs = max(done) + 1 if done else len(rows)
    facts = {"data": info.get("source"), "n_train": info.get("n_train"), "n_validation": info.get("n_test"),
             "epochs": epochs, "wall_seconds": round(sum(r.get("seconds", 0.0) for r in rows), 1),
             # CPU time of every epoch when the history has it (runs started before it was recorded lack it)
             "cpu_seconds": round(sum(r["cpu_seconds"] for r in rows), 1)
             if rows and all("cpu_seconds" in r for r in rows) else None,
             "final_val_accuracy": rows[-1].get("val_accuracy") if rows else None,
             "started": config.get("started"), "finished": config.get("finished"), "machine": _machine(),
             "init_weights": (config.get("init_weights") or {}).get("path")}
    missing = sorted(set(range(epochs)) - set(done)) if done else []
    if missing:
        facts["epochs_without_history"] = missing  # 0-based; wall and CPU seconds are sums over the other epochs
    if train_data is not None:
        facts["data_sha256"] = dataset_sha256(train_data)
    return facts, config.get("recipe")


def publish(name: str, model_file: str, eval_data: tuple[np.ndarray, np.ndarray], *, dataset: str,
            eps: Sequence[float], representative_data: np.ndarray, suite: str = "standard", scale: str = "image",
            run_dir: str | None = None, train_data: str | None = None, eval_set: str = "", purpose: str = "",
            input_description: str = "", targets: Sequence[dict[str, Any]] = (), commands: Sequence[str] = (),
            seed: int = 0, root: str = zoo.ZOO_DIR, overwrite: bool = False, verbose: int = 1,
            cache: str | None = None, pending_eps: Sequence[float] = (),
            training: tuple[dict[str, Any], dict[str, Any] | None] | None = None,
            reuse: Any = None, waveform_data: tuple[np.ndarray, np.ndarray] | None = None,
            waveform_eps: Sequence[float] = (), pending_waveform_eps: Sequence[float] = (),
            reuse_waveform: Any = None) -> dict[str, Any]:
    """Build the zoo entry ``root/NAME`` from ``model_file`` and return its card (also written as ``card.json``).

    Args:
        name: entry name (a folder name: letters, digits, ``_``).
        model_file: the trained Keras model (``.h5``).
        eval_data: ``(x, y)`` evaluation inputs in the model's input range and integer labels.
        dataset: ``"cifar10"``, ``"svhn"`` or ``"speech_commands"``.
        eps: L-inf budgets (input units).
        representative_data: int8 calibration inputs.
        suite: evaluation suite passed to :func:`~qrobust_keras.evaluation.evaluate_robustness`.
        scale: registry defaults (``"image"`` or ``"audio"``).
        run_dir: the run folder the model was trained in (recipe, epochs and time go on the card).
        train_data: the training data folder, hashed onto the card.
        eval_set, purpose, input_description: text for the card.
        targets: ``{"what", "metric", "min"}`` dicts checked by :func:`evaluate_targets`.
        commands: the commands that reproduce the entry.
        root: the zoo folder (default: the package's).
        overwrite: replace an existing entry.
        verbose: 1 shows the evaluation's progress, 0 is silent.
        cache: folder keeping each evaluated budget, so an interrupted publish resumes (default
            ``run_dir/zoo_eval`` when ``run_dir`` is given).
        pending_eps: budgets the entry is meant to report that this publish did not evaluate; the card lists them
            as not yet measured (``budgets_pending``) rather than leaving them out silently.
        training: ``(facts, recipe)`` for the card instead of reading ``run_dir`` (an entry republished from its
            own card, see :func:`republish`).
        reuse: a :class:`~qrobust_keras.evaluation.RobustnessReport` of this model whose budgets are taken instead
            of evaluated again, when its model fingerprint, suite, seed, scale, clip and per-sample clean results
            all match (otherwise it is ignored, with a line saying why).
        waveform_data: audio models: ``(x, y)``, the same samples as waveforms folded to ``(125, 128)``; the model
            behind the differentiable MFCC front end (:func:`~qrobust_keras.data.waveform_model`) is evaluated on
            them at ``waveform_eps`` (full scale 1, clip [-1, 1]), into ``evaluation_waveform.json``. The card's
            budget labels then say which input they perturb: ``"MFCC 0.25"``, ``"waveform 0.0005"``.
        waveform_eps: the waveform budgets; pending_waveform_eps: those not evaluated by this publish.
        reuse_waveform: as ``reuse``, for the waveform budgets (checked against the model behind its front end).

    Raises:
        ValueError: a bad name, or an existing entry without ``overwrite``.
    """
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"name must be letters, digits and '_'; got name={name!r}")
    final = os.path.join(root, name)
    if os.path.exists(final) and not overwrite:
        raise ValueError(f"zoo entry {final!r} exists; pass overwrite=True to replace it")
    # Built beside the entry and swapped in at the end: an interrupted publish leaves the old entry as it was.
    with atomic_folder(final) as entry:
        return _build_entry(entry, name, model_file, eval_data, dataset=dataset, eps=eps,
                            representative_data=representative_data, suite=suite, scale=scale, run_dir=run_dir,
                            train_data=train_data, eval_set=eval_set, purpose=purpose,
                            input_description=input_description, targets=targets, commands=commands, seed=seed,
                            verbose=verbose, cache=cache, pending_eps=pending_eps, training=training, reuse=reuse,
                            waveform_data=waveform_data, waveform_eps=waveform_eps,
                            pending_waveform_eps=pending_waveform_eps, reuse_waveform=reuse_waveform)


def _build_entry(entry: str, name: str, model_file: str, eval_data: tuple[np.ndarray, np.ndarray], *, dataset: str,
                 eps: Sequence[float], representative_data: np.ndarray, suite: str, scale: str, run_dir: str | None,
                 train_data: str | None, eval_set: str, purpose: str, input_description: str,
                 targets: Sequence[dict[str, Any]], commands: Sequence[str], seed: int, verbose: int,
                 cache: str | None, pending_eps: Sequence[float], training: Any, reuse: Any,
                 waveform_data: tuple[np.ndarray, np.ndarray] | None, waveform_eps: Sequence[float],
                 pending_waveform_eps: Sequence[float], reuse_waveform: Any) -> dict[str, Any]:
    """The files and card of a zoo entry, written into the folder ``entry`` (see :func:`publish`)."""
    from qrobust_keras import __version__
    from qrobust_keras._keras import qkeras, tf
    from qrobust_keras.data import waveform_model
    from qrobust_keras.evaluation import format_eps
    from qrobust_keras.zoo.budgets import evaluate_per_budget
    from qrobust_keras.export import compare_runtimes, export_files
    from qrobust_keras.models.io import load_model
    from qrobust_keras.recipes.run import save_model_atomic

    start = time.time()
    x, y = eval_data
    save_model_atomic(load_model(model_file, compile=False), os.path.join(entry, zoo.MODEL_FILE))
    model = load_model(os.path.join(entry, zoo.MODEL_FILE), compile=False)   # every number is of the shipped file
    tflite, exported = export_files(model, "model", entry, representative_data=representative_data, int8=True,
                                    fidelity_data=(x, y))
    # the exporter names the absolute path it wrote to (here a hidden scratch folder); the shipped report names the
    # file, so it is the same on every machine
    exported["export"]["path"] = zoo.TFLITE_FILE
    atomic_write(os.path.join(entry, "export.json"),
                 json.dumps({k: v for k, v in exported.items() if k != "markdown"}, indent=2, default=str))
    runtimes = compare_runtimes(tflite, x, y, runtimes=("litert", "litert-reference"))
    lo, hi = (0.0, 1.0) if scale == "image" else (float(np.min(x)), float(np.max(x)))
    cache = cache or (None if run_dir is None else os.path.join(run_dir, "zoo_eval"))
    model_sha256 = zoo.sha256_file(os.path.join(entry, zoo.MODEL_FILE))
    report = evaluate_per_budget(model, x, y, list(eps), suite=suite, seed=seed, scale=scale, clip=(lo, hi),
                                 name=name, cache=cache, model_sha256=model_sha256, verbose=verbose, reuse=reuse)
    report.to_json(os.path.join(entry, "evaluation.json"))
    # one model file, two inputs for audio: then every budget label says which input it perturbs
    prefix = "" if waveform_data is None else "MFCC "
    labels = [prefix + b for b in report.settings["eps_labels"]]
    robust = dict(zip(labels, report.robust_accuracy))
    per_attack = {a: dict(zip(labels, acc)) for a, acc in report.accuracy.items()}
    if waveform_data is not None and len(waveform_eps):
        wave = evaluate_per_budget(waveform_model(model), *waveform_data, list(waveform_eps), suite=suite, seed=seed,
                                   scale="audio", clip=(-1.0, 1.0), name=f"{name} (waveform)", cache=cache,
                                   model_sha256=model_sha256, verbose=verbose, inputs="waveform",
                                   reuse=reuse_waveform)
        wave.to_json(os.path.join(entry, "evaluation_waveform.json"))
        wave_labels = [f"waveform {b}" for b in wave.settings["eps_labels"]]
        robust.update(zip(wave_labels, wave.robust_accuracy))
        for a, row in per_attack.items():
            row.update(zip(wave_labels, wave.accuracy.get(a, [None] * len(wave_labels))))
    training, recipe = training if training is not None else _training_facts(run_dir, train_data)
    ex = exported["export"]
    card: dict[str, Any] = {
        "name": name, "purpose": purpose, "dataset": dataset, "input": input_description,
        "parameters": int(model.count_params()), "eval_set": eval_set, "eval_samples": int(len(x)),
        "suite": report.settings.get("suite", suite), "suite_settings": report.settings,
        "clean_accuracy": report.clean_accuracy,
        "robust_accuracy": robust, "per_attack": per_attack,
        "per_attack_note": "Cascade: each attack ran only on the samples all earlier attacks failed to break, so "
                           "each row is the robust accuracy after that attack and those before it."
                           if report.settings.get("cascade") else "",
        "int8": {"accuracy": ex.get("accuracy_tflite"), "kernels": ex.get("fidelity_kernels"),
                 "agreement": ex.get("agreement"),
                 "agreement_untied": ex.get("agreement_untied"), "top_ties": ex.get("top_ties"),
                 "file_bytes": ex.get("size_bytes"), "arena_bytes": (exported.get("tflm") or {}).get("arena_bytes"),
                 "all_ops_supported": (exported.get("tflm") or {}).get("all_ops_supported"), "runtimes": runtimes},
        "training": training, "recipe": recipe, "library_version": __version__, "tensorflow": tf.__version__,
        "qkeras": getattr(qkeras, "__version__", "0.9.0"), "python": sys.version.split()[0],
        "evaluation_seconds": round(time.time() - start, 1), "commands": list(commands),
        "budgets_pending": [prefix + format_eps(e, "inf", scale) for e in pending_eps]
                           + [f"waveform {format_eps(e, 'inf', 'audio')}" for e in pending_waveform_eps],
    }
    card["targets"] = evaluate_targets(card, targets)
    card["files"] = {f: zoo.sha256_file(os.path.join(entry, f)) for f in sorted(os.listdir(entry))}
    atomic_write(os.path.join(entry, zoo.CARD_FILE), json.dumps(card, indent=1, default=_json_default))
    return card


def publish_reference(name: str, model: Any, eval_data: tuple[np.ndarray, np.ndarray], *, dataset: str,
                      eps: Sequence[float], representative_data: np.ndarray, root: str = cards.REFERENCES_DIR,
                      cache: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """The card of a reference model that the zoo is compared with but does not ship (the MLCommons Tiny models:
    their weights are the user's copy), measured exactly as :func:`publish` measures a zoo entry: same evaluation
    set, suite, budgets, exporter and int8 checks. Writes ``root/NAME.json`` (atomically) and returns the card;
    ``files`` is empty and ``shipped`` False, since nothing of the model is in the package.

    Args:
        name: card name. model: the Keras model (e.g. ``load_mlcommons("resnet8", DIR)``, inputs in [0, 1]).
        eval_data, dataset, eps, representative_data: as in :func:`publish`.
        root: folder of the reference cards (default: the package's ``zoo/references``).
        cache: folder keeping each evaluated budget (an interrupted run resumes).
        kwargs: further :func:`publish` arguments (``suite``, ``purpose``, ``commands``, ...).
    """
    import tempfile

    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"name must be letters, digits and '_'; got name={name!r}")
    with tempfile.TemporaryDirectory(prefix="qrobust-reference-") as scratch:
        model_file = os.path.join(scratch, "reference.h5")
        model.save(model_file)
        card = publish(name, model_file, eval_data, dataset=dataset, eps=eps, representative_data=representative_data,
                       root=os.path.join(scratch, "zoo"), cache=cache, **kwargs)
    card.update(files={}, shipped=False)
    atomic_write(os.path.join(root, f"{name}.json"), json.dumps(card, indent=1, default=_json_default))
    return card


def republish(name: str, eval_data: tuple[np.ndarray, np.ndarray], *, root: str = zoo.ZOO_DIR,
              **kwargs: Any) -> dict[str, Any]:
    """Publish the entry ``root/NAME`` again from its own shipped ``model.h5`` when its run folder is gone: the
    training facts and recipe come from its card, the budgets its ``evaluation.json`` (and, for audio,
    ``evaluation_waveform.json``) already measured are reused (only if :func:`publish`'s ``reuse`` checks pass), and
    the rest are evaluated. Used to add budgets to an entry.

    Args:
        name: an existing entry. eval_data: as in :func:`publish`.
        root: the zoo folder. kwargs: the other :func:`publish` arguments (``eps``, ``dataset``, ...).

    Raises:
        ZooError: no such entry, or its card or model file is missing or changed.
    """
    from qrobust_keras.evaluation import RobustnessReport

    old = zoo.card(name, root=root)
    entry = os.path.join(root, name)
    reports = {}
    for key, file in (("reuse", "evaluation.json"), ("reuse_waveform", "evaluation_waveform.json")):
        path = os.path.join(entry, file)
        reports[key] = RobustnessReport.from_json(path) if os.path.exists(path) else None
    # publish builds the new entry beside this one, so the shipped model.h5 stays readable until the swap
    return publish(name, zoo.model_path(name, root=root), eval_data, root=root, overwrite=True,
                   training=(old.get("training") or {}, old.get("recipe")), **reports, **kwargs)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def _pick_budgets(p: Any, option: str, text: str | None, budgets: Sequence[float], name: str) -> list[float]:
    """The budgets of ``budgets`` that ``text`` (``--eps``-style list) names; all of them when ``text`` is None,
    none for ``"none"`` (the card then lists every one as not yet measured)."""
    if not text:
        return list(budgets)
    if text.strip().lower() == "none":
        return []
    from qrobust_keras._checks import parse_eps_list

    wanted = parse_eps_list(text)
    unknown = [e for e in wanted if not any(abs(e - b) < 1e-9 for b in budgets)]
    if unknown:
        p.error(f"{option} {text!r}: {unknown} are not budgets of {name} ({list(budgets)})")
    return [b for b in budgets if any(abs(b - w) < 1e-9 for w in wanted)]


def main(argv: list[str] | None = None) -> int:
    """``python -m qrobust_keras.zoo.publish NAME --run RUN_DIR --cifar10 DIR [--train-data DIR]`` for a zoo entry
    (``--speech-commands DIR`` for a Speech Commands one), ``python -m qrobust_keras.zoo.publish mlcommons_resnet8
    --mlcommons DIR --cifar10 DIR`` for a reference card."""
    import argparse

    from qrobust_keras.zoo.eval_sets import load_eval_set

    p = argparse.ArgumentParser(description="publish a zoo entry (model, int8 file, card) from a finished run, or "
                                            "the card of a reference model")
    p.add_argument("name", choices=sorted(SPECS) + sorted(REFERENCE_SPECS))
    p.add_argument("--run", help="run folder of `qrobust train` (its model.h5 is shipped); zoo entries only. "
                                 "Without it a published entry is redone from its own files (see republish)")
    p.add_argument("--mlcommons", help="folder of the official MLCommons Tiny weights; references only")
    p.add_argument("--cifar10", help="CIFAR-10 python batches (CIFAR-10 entries: the exact test images are the "
                                     "evaluation set)")
    p.add_argument("--speech-commands", help="the Speech Commands folder (Speech Commands entries: the test part "
                                             "of the speaker-disjoint split is the evaluation set)")
    p.add_argument("--train-data", default=None, help="the training data folder (hashed onto the card)")
    p.add_argument("--suite", default="standard", help="evaluation suite (default standard)")
    p.add_argument("--root", default=None, help="zoo folder, or references folder (default: the package's)")
    p.add_argument("--eps", default=None, help="only these budgets of the entry's (e.g. 2/255,8/255; MFCC units "
                                               "for audio); the card lists the others as not yet measured")
    p.add_argument("--waveform-eps", default=None, help="audio: only these waveform budgets of the entry's "
                                                        "('none': none yet)")
    p.add_argument("--cache", default=None, help="folder keeping each evaluated block and budget, so a rerun resumes "
                                                 "(default: RUN/zoo_eval with --run, else runs/zoo_eval/NAME, or "
                                                 "runs/reference_eval/NAME for a reference)")
    args = p.parse_args(argv)
    spec = {**SPECS, **REFERENCE_SPECS}[args.name]
    folder = {"cifar10": args.cifar10, "speech_commands": args.speech_commands}[spec["dataset"]]
    if not folder:
        p.error(f"{args.name} is a {spec['dataset']} model: pass --{spec['dataset'].replace('_', '-')} DIR")
    eps = _pick_budgets(p, "--eps", args.eps, spec["eps"], args.name)
    if not eps:
        p.error(f"--eps {args.eps!r}: a card needs at least one budget of the model's own input ({spec['eps']})")
    wave_eps = _pick_budgets(p, "--waveform-eps", args.waveform_eps, spec.get("waveform_eps", []), args.name)
    evs = load_eval_set(spec["dataset"], folder)  # after every argument check: reading the clips takes a while
    common = dict(dataset=spec["dataset"], eps=eps, pending_eps=[e for e in spec["eps"] if e not in eps],
                  representative_data=evs.calibration, suite=args.suite, eval_set=evs.description,
                  purpose=spec["purpose"], input_description=evs.input, commands=spec["commands"],
                  scale="audio" if spec["dataset"] == "speech_commands" else "image")
    if evs.waveform is not None:
        common.update(waveform_data=evs.waveform, waveform_eps=wave_eps,
                      pending_waveform_eps=[e for e in spec.get("waveform_eps", []) if e not in wave_eps])
    if args.name in REFERENCE_SPECS:
        from qrobust_keras.models import load_mlcommons

        if not args.mlcommons:
            p.error(f"{args.name} is a reference card: pass --mlcommons DIR (the official weights)")
        card = publish_reference(args.name, load_mlcommons(spec["model"], args.mlcommons), evs.data,
                                 root=args.root or cards.REFERENCES_DIR,
                                 cache=args.cache or os.path.join("runs", "reference_eval", args.name), **common)
    else:
        common.update(targets=spec["targets"], root=args.root or zoo.ZOO_DIR)
        if args.run:
            card = publish(args.name, os.path.join(args.run, "model.h5"), evs.data, run_dir=args.run,
                           train_data=args.train_data, overwrite=True, cache=args.cache, **common)
        elif args.name in zoo.list(common["root"]):
            card = republish(args.name, evs.data, cache=args.cache or os.path.join("runs", "zoo_eval", args.name),
                             **common)
        else:
            p.error(f"{args.name} is not published yet: pass --run RUN_DIR (the finished training run)")
    print(zoo.card_markdown(card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
