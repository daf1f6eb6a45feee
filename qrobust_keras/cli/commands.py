"""The ``qrobust`` commands: each reads its parsed arguments and calls the library (nothing else happens here).

Example:

>>> from qrobust_keras.cli.parsing import build_parser
>>> args = build_parser().parse_args(["zoo", "list"])
>>> args.func.__name__
'cmd_zoo'
"""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["cmd_train", "cmd_evaluate", "cmd_export", "cmd_zoo", "cmd_report", "cmd_demo"]


def _load_data(args: argparse.Namespace, **kwargs):
    from qrobust_keras.data import datasets

    return datasets.load_dataset(args.dataset, args.data_dir, source=getattr(args, "source", "auto"),
                                 seed=getattr(args, "seed", 0), verbose=args.verbose,
                                 download=getattr(args, "download", False), **kwargs)


def cmd_train(args: argparse.Namespace) -> int:
    from qrobust_keras.recipes import FINAL_MODEL, HISTORY_CSV, fit_recipe, get_recipe
    from qrobust_keras.training.distribute import make_strategy

    strategy = make_strategy(args.strategy)  # first: multi-worker collectives must be set up before other TF ops
    recipe = get_recipe(args.recipe, model=args.model, dataset=args.dataset, epochs=args.epochs,
                        batch_size=args.batch_size, seed=args.seed, learning_rate=args.lr, policy=args.policy,
                        filters=args.filters, at_eps=args.at_eps, at_ratio=args.at_ratio,
                        at_method=args.at_method)
    data = _load_data(args, n_train=args.train_samples, n_test=args.val_samples)
    if args.verbose:
        print(f"qrobust train: recipe {recipe.name} for {recipe.model} on {data.source}: {len(data.train[0])} "
              f"training and {len(data.test[0])} validation samples, {recipe.epochs} epochs, batch "
              f"{recipe.batch_size}; run folder {args.out}")
    fit_recipe(recipe, data.train, data.test if len(data.test[0]) else None, args.out, verbose=args.verbose,
               run_info=data.describe(), init_weights=args.init_weights, strategy=strategy,
               robust_val_eps=args.robust_val, robust_val_samples=args.robust_val_samples)
    if args.verbose:
        print(f"qrobust train: done; model {os.path.join(args.out, FINAL_MODEL)}, history "
              f"{os.path.join(args.out, HISTORY_CSV)}")
    return 0


def _load_any_model(path: str, kernels: str = "default"):
    """(kind, object): ``("keras", model)`` for .h5/.keras/SavedModel, ``("tflite", TFLiteModel)`` (on the
    interpreter ``kernels``) for .tflite; ``zoo:NAME`` (``zoo:NAME.tflite``) is a zoo model (its int8 file),
    checked against its card's sha256."""
    path = _zoo_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"MODEL={path!r} does not exist; expected a .h5/.keras file, a SavedModel folder or "
                                "a .tflite file")
    if path.lower().endswith(".tflite"):
        from qrobust_keras.export import TFLiteModel

        return "tflite", TFLiteModel(path, kernels=kernels)
    from qrobust_keras.models import load_model

    return "keras", load_model(path, compile=False)


def _evaluation_title(model: str, dataset: str) -> tuple[str, str]:
    """(curve label, markdown title) of an evaluation of the model file ``model`` on ``dataset``."""
    name = os.path.splitext(os.path.basename(os.path.normpath(model)))[0]
    return name, f"{name} on {dataset}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from qrobust_keras.data.datasets import to_float
    from qrobust_keras.evaluation import format_eps, run_attacks, write_evaluation

    kind, model = _load_any_model(args.model, kernels=args.tflite_kernels)
    # scored on the faithful kernels, searched on the fast ones: the numbers are the deployed file's
    search = None if kind == "keras" or model.kernels == "default" else _load_any_model(args.model)[1]
    if args.suite and args.attacks:
        raise ValueError(f"give either --suite or --attacks, not both; got --suite {args.suite} and --attacks "
                         f"{','.join(args.attacks)}")
    source = None
    if args.source_model:
        source_kind, source = _load_any_model(args.source_model)
        if kind != "tflite" or source_kind != "keras":
            raise ValueError(f"--source-model is the Keras model a .tflite MODEL was exported from; got MODEL "
                             f"{args.model!r} ({kind}) and --source-model {args.source_model!r} ({source_kind})")
    default = ["square"] if kind == "tflite" and source is None else ["fgsm", "pgd", "square"]
    attacks = [] if args.suite else (args.attacks or default)
    data = _load_data(args, n_test=args.n, need_train=False)
    x, y = to_float(data.test[0]), data.test[1]
    audio = args.dataset == "speech_commands"
    clip = (float(x.min()), float(x.max())) if audio else (0.0, 1.0)
    scale = "audio" if audio else "image"
    if args.verbose:
        print(f"qrobust {args.command}: {args.model} ({kind}) on {len(x)} samples of {data.source}; "
              f"{'suite ' + args.suite if args.suite else 'attacks ' + ', '.join(attacks)}; eps "
              f"{', '.join(format_eps(e, 'inf', scale) for e in args.eps)}"
              + (f"; shard {args.shard[0]}/{args.shard[1]}" if args.shard else ""))
    ev = run_attacks(model, kind, x, y, attacks, args.eps, steps=args.steps, queries=args.queries, seed=args.seed,
                     verbose=2 if args.verbose else 0, batch_size=args.batch_size, clip_range=clip, scale=scale,
                     suite=args.suite, source_model=source, shard=args.shard, search_model=search)
    ev.update(model=os.path.abspath(args.model), model_kind=kind, data=data.describe())
    name, title = _evaluation_title(args.model, args.dataset)
    if args.shard:
        s = ev["robustness_report"]["settings"]["shard"]
        title += f", shard {s['index']}/{s['count']} (samples {s['start']}-{s['stop'] - 1} of {s['n_total']})"
    md = write_evaluation(ev, args.out, name, title)
    print(md)
    print(f"qrobust {args.command}: report in {os.path.abspath(args.out)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from qrobust_keras import export as qexport
    from qrobust_keras.data.datasets import to_float
    from qrobust_keras.models import load_model

    model = load_model(_zoo_path(args.model), compile=False)
    rep = fidelity = None
    if args.representative_data:
        if os.path.isfile(args.representative_data) and args.representative_data.endswith(".npy"):
            rep = np.load(args.representative_data)
        else:
            args.data_dir = args.representative_data
            data = _load_data(args, n_train=args.samples, n_test=args.samples)
            rep = to_float(data.train[0] if len(data.train[0]) else data.test[0])
            fidelity = (to_float(data.test[0]), data.test[1])
    elif args.int8:
        raise ValueError("--int8 needs --representative-data: a dataset folder (see --dataset) or a .npy of inputs")
    os.makedirs(args.out, exist_ok=True)
    name = os.path.splitext(os.path.basename(os.path.normpath(args.model)))[0]
    path, summary = qexport.export_files(model, name, args.out, representative_data=rep, int8=args.int8,
                                         fidelity_data=fidelity, c_array=args.c_array)
    print(summary["markdown"])
    if "tflm" in summary:
        print(f"TFLite Micro: {summary['tflm']}")
    print(f"qrobust export: wrote {path}")
    return 0


def _zoo_path(text: str) -> str:
    """The file a MODEL argument names: ``zoo:NAME`` -> the zoo model's .h5, ``zoo:NAME.tflite`` -> its int8 file."""
    from qrobust_keras import zoo

    if text.startswith(zoo.PREFIX) and text.endswith(".tflite"):
        return zoo.tflite_path(text[len(zoo.PREFIX):-len(".tflite")])
    return zoo.resolve(text)


def cmd_zoo(args: argparse.Namespace) -> int:
    from qrobust_keras import zoo
    from qrobust_keras.zoo import cards

    if args.action == "show":
        if not args.name:
            raise ValueError(f"`qrobust zoo show` needs NAME; available: {', '.join(zoo.list()) or 'none'}")
        print(zoo.card_markdown(zoo.card(args.name)), end="")
        return 0
    names = zoo.list()
    if not names:
        print("no zoo models are installed")
    for name in names:
        c = zoo.card(name)
        worst = ", ".join(f"{b} {100 * v:.1f}%" for b, v in c["robust_accuracy"].items())
        print(f"{name:20s} {c['dataset']:16s} clean {100 * c['clean_accuracy']:.1f}%; worst case "
              f"({cards.suite_status(c)}): "
              f"{worst}; int8 {c['int8'].get('file_bytes') or 0:,} B")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.merge:
        return _merge_report(args)
    from qrobust_keras.recipes.report import write_run_report

    path = write_run_report(args.run_dir, out=args.out)
    print(f"qrobust report: {path}")
    return 0


def _merge_report(args: argparse.Namespace) -> int:
    """``qrobust report --merge DIR... --out DIR``: the shards' evaluation.json joined and written as
    ``qrobust evaluate`` writes its own."""
    from qrobust_keras.evaluation import merge_summaries, write_evaluation

    shards = []
    for folder in args.merge:
        path = os.path.join(folder, "evaluation.json")
        with open(path, encoding="utf-8") as f:
            try:
                shards.append(json.load(f))
            except json.JSONDecodeError as exc:
                raise ValueError(f"--merge {folder!r}: {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
                                 "pass the --out folders of `qrobust evaluate --shard I/N`") from None
    ev = merge_summaries(shards)
    name, title = _evaluation_title(ev.get("model", "model"), (ev.get("data") or {}).get("dataset", "data"))
    md = write_evaluation(ev, args.out, name, title)
    print(md)
    print(f"qrobust report: merged {len(shards)} shards ({ev['n']} samples) into {os.path.abspath(args.out)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from qrobust_keras.demo import run_demo

    return run_demo(data_dir=args.data_dir, out=args.out, quick=args.quick, verbose=args.verbose,
                    download=args.download)

