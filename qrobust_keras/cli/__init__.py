"""The ``qrobust`` command: train, attack/evaluate, export, report, demo, zoo.

This package only parses arguments (:mod:`~qrobust_keras.cli.parsing`) and calls the library
(:mod:`~qrobust_keras.cli.commands`): datasets come from :mod:`qrobust_keras.data.datasets`,
attacks and their scoring from :mod:`qrobust_keras.evaluation`, run folders and their reports from
:mod:`qrobust_keras.recipes`, the demo from :mod:`qrobust_keras.demo`. Parsing imports no TensorFlow, so ``--help``
and argument errors answer at once; TensorFlow's C++ start-up log lines are hidden unless ``--verbose 2``.

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
import os
import sys

from qrobust_keras.cli import quiet
from qrobust_keras.cli.parsing import ATTACKS, build_parser, parse_attacks, parse_eps, parse_eps_list, parse_policy

__all__ = ["main", "build_parser", "parse_eps", "parse_eps_list", "parse_policy", "parse_attacks", "ATTACKS"]

_LEGACY = {  # names that lived here before the library took them over; still importable from qrobust_keras.cli
    "load_dataset": "qrobust_keras.data.datasets", "DataSpec": "qrobust_keras.data.datasets",
    "run_attacks": "qrobust_keras.evaluation.robustness", "evaluation_markdown": "qrobust_keras.evaluation.report",
    "plot_accuracy_vs_eps": "qrobust_keras.evaluation.report", "write_run_report": "qrobust_keras.recipes.report",
    "plot_history": "qrobust_keras.recipes.report",
}


def __getattr__(name: str):
    if name in _LEGACY:
        import importlib

        return getattr(importlib.import_module(_LEGACY[name]), name)
    if name == "eps_label":
        from qrobust_keras.evaluation.report import format_eps

        return format_eps
    raise AttributeError(f"module 'qrobust_keras.cli' has no attribute {name!r}")


def _missing_path(args: argparse.Namespace) -> str | None:
    model = getattr(args, "model", None) if args.command in ("attack", "evaluate", "export") else None
    if model is not None and model.startswith("zoo:"):
        from qrobust_keras import zoo

        name = model[4:-7] if model.endswith(".tflite") else model[4:]
        return None if name in zoo.list() else (f"MODEL={model!r}: {name!r} is not a zoo model; available: "
                                                f"{', '.join(zoo.list()) or 'none'}")
    if args.command == "zoo" and args.action == "show" and args.name is not None:
        from qrobust_keras import zoo

        return None if args.name in zoo.list() else (f"NAME={args.name!r} is not a zoo model; available: "
                                                     f"{', '.join(zoo.list()) or 'none'}")
    if model is not None and not os.path.exists(model):
        return (f"MODEL={model!r} does not exist; expected a .h5/.keras file, a SavedModel folder"
                + (" or a .tflite file" if args.command != "export" else ""))
    if args.command == "report" and not os.path.isdir(args.run_dir):
        return f"RUN_DIR={args.run_dir!r} is not a folder; pass the --out folder of `qrobust train`"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qrobust`` console script; returns the exit status.

    Errors a user can fix (missing data, bad arguments, missing files) print one ``qrobust CMD: error: ...`` line
    and return 2 instead of a traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet.show_tf_logs(quiet.wants_tf_logs(argv))
    args = build_parser().parse_args(argv)
    problem = _missing_path(args)
    if problem:  # answered before TensorFlow loads: a typo in a path costs no start-up time
        print(f"qrobust {args.command}: error: {problem}", file=sys.stderr)
        return 2
    if args.command != "zoo":  # listing and showing cards need no TensorFlow
        quiet.import_tensorflow_quietly()
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:  # DataNotFoundError is a FileNotFoundError, ZooError a ValueError
        hint = ""
        if type(exc).__name__ == "DataNotFoundError" and getattr(args, "dataset", "cifar10") == "cifar10" \
                and "download" in args and not args.download and not args.data_dir:
            hint = "rerun with --download to fetch CIFAR-10 (about 163 MB), or pass --data-dir DIR. "
        print(f"qrobust {args.command}: error: {hint}{exc}", file=sys.stderr)
        return 2

if __name__ == "__main__":
    sys.exit(main())
