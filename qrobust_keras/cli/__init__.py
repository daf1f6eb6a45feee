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
    qrobust evaluate run/model.h5 --data-dir D -n 10000 --shard 0/4 --out shards/0   # ... 1/4, 2/4, 3/4
    qrobust report --merge shards/0 shards/1 shards/2 shards/3 --out report/

Every command has ``--help``. Budgets (``--eps``) accept fractions (``8/255``) and decimals (``0.03``). A failure
the user can fix prints one ``qrobust CMD: error: ...`` line and exits 2; Ctrl-C prints ``qrobust CMD: interrupted``
and exits 130. A failed command leaves no empty ``--out`` folder it created.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys

from qrobust_keras.cli import quiet
from qrobust_keras.cli.parsing import ATTACKS, build_parser, parse_attacks, parse_eps, parse_eps_list, parse_policy

__all__ = ["main", "build_parser", "parse_eps", "parse_eps_list", "parse_policy", "parse_attacks", "ATTACKS"]

_LEGACY = {  # names that lived here before the library took them over; still importable from qrobust_keras.cli
    "load_dataset": "qrobust_keras.data.datasets", "DataSpec": "qrobust_keras.data.datasets",
    "run_attacks": "qrobust_keras.evaluation.summary", "evaluation_markdown": "qrobust_keras.evaluation.report",
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
    if args.command == "report":
        return _report_problem(args)
    return None


def _report_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments of ``qrobust report``: RUN_DIR and --merge are exclusive, --merge needs --out
    and folders that hold an evaluation.json."""
    if (args.run_dir is None) == (args.merge is None):
        return ("give RUN_DIR (a run folder to report on) or --merge DIR... --out DIR (the shards of `qrobust evaluate "
                f"--shard I/N` to join), not {'both' if args.merge else 'neither'}")
    if args.merge is None:
        return None if os.path.isdir(args.run_dir) else (f"RUN_DIR={args.run_dir!r} is not a folder; pass the --out "
                                                         "folder of `qrobust train`")
    if not args.out:
        return ("--merge needs --out DIR: the folder for the merged evaluation.json, evaluation.md and "
                "accuracy_vs_eps.png")
    for folder in args.merge:
        if not os.path.isfile(os.path.join(folder, "evaluation.json")):
            return (f"--merge {folder!r} holds no evaluation.json; pass the --out folders of `qrobust evaluate "
                    "--shard I/N`")
    return None


# Commands whose --out is a folder they create (report's --out is a file, except with --merge).
_OUT_FOLDERS = ("train", "attack", "evaluate", "export", "demo")


def _out_is_folder(args: argparse.Namespace) -> bool:
    return args.command in _OUT_FOLDERS or (args.command == "report" and bool(getattr(args, "merge", None)))


def _out_problem(args: argparse.Namespace) -> str | None:
    """Why ``--out`` cannot be written, answered before TensorFlow loads: for the commands that write a folder, an
    existing file at ``--out`` or at one of its parent folders; for ``report``, an existing folder at ``--out``."""
    out = getattr(args, "out", None)
    if not out:
        return None
    if args.command == "report" and not _out_is_folder(args):
        return (f"--out {out!r} is an existing folder; --out of `qrobust report` is the report file (default "
                "RUN_DIR/report.md)") if os.path.isdir(out) else None
    if not _out_is_folder(args):
        return None
    path = os.path.abspath(out)
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    if os.path.isdir(path):
        return None
    where = "is an existing file" if path == os.path.abspath(out) else f"lies under the existing file {path!r}"
    return f"--out {out!r} {where}; --out names a folder (created when missing), give another path"


def _created_out_folder(args: argparse.Namespace) -> str | None:
    """The top-most folder that does not exist yet on the way to a command's ``--out`` folder (``--out`` itself, or
    the first missing parent), or None when ``--out`` already exists: what the command may create."""
    out = getattr(args, "out", None) if _out_is_folder(args) else None
    if not out or os.path.lexists(out):
        return None
    top = os.path.abspath(out)
    while not os.path.lexists(os.path.dirname(top)):
        top = os.path.dirname(top)
    return top


def _remove_if_empty(folder: str | None) -> None:
    """Remove ``folder`` when it holds no file at any depth (only empty folders), with ``os.rmdir`` only: a file that
    appears meanwhile keeps its folders. A run folder with finished epochs holds files, so it stays to resume."""
    if folder is None or not os.path.isdir(folder) or os.path.islink(folder):
        return
    for root, dirs, files in os.walk(folder):
        if files or any(os.path.islink(os.path.join(root, d)) for d in dirs):
            return
    for root, _, _ in os.walk(folder, topdown=False):  # deepest first
        try:
            os.rmdir(root)
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``qrobust`` console script; returns the exit status.

    Errors a user can fix print one ``qrobust CMD: error: ...`` line and return 2 instead of a traceback: missing
    data or files, bad arguments, an ``--out`` that is an existing file, a truncated or corrupt model file or the
    official MLCommons file given as MODEL (:class:`~qrobust_keras.models.ModelFileError`), and every
    :mod:`qrobust_keras.data.errors` exception (broken or unsafe dataset files). Ctrl-C prints
    ``qrobust CMD: interrupted`` (for ``train``: rerunning the same command resumes) and returns 130. When a command
    fails or is interrupted, an ``--out`` folder it created and left without files is removed; a folder that existed
    before, or that holds files (a killed run's finished epochs), stays.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet.show_tf_logs(quiet.wants_tf_logs(argv))
    args = build_parser().parse_args(argv)
    problem = _missing_path(args) or _out_problem(args)
    if problem:  # answered before TensorFlow loads: a typo in a path costs no start-up time
        print(f"qrobust {args.command}: error: {problem}", file=sys.stderr)
        return 2
    created = _created_out_folder(args)
    status = 1
    try:
        if args.command != "zoo":  # listing and showing cards need no TensorFlow
            quiet.import_tensorflow_quietly()
        status = int(args.func(args) or 0)
        return status
    # qrobust_keras.data.errors: DataNotFoundError is a FileNotFoundError, CorruptDataError and WavFormatError are
    # ValueErrors, UnsafePickleError is a pickle.UnpicklingError; ModelFileError and ZooError are ValueErrors.
    except (FileNotFoundError, ValueError, pickle.UnpicklingError, PermissionError) as exc:
        hint = ""
        if type(exc).__name__ == "DataNotFoundError" and getattr(args, "dataset", "cifar10") == "cifar10" \
                and "download" in args and not args.download and not args.data_dir:
            hint = "rerun with --download to fetch CIFAR-10 (about 163 MB), or pass --data-dir DIR. "
        print(f"qrobust {args.command}: error: {hint}{exc}", file=sys.stderr)
        status = 2
        return status
    except KeyboardInterrupt:
        resume = "; rerun the same command to resume from the last finished epoch" if args.command == "train" else ""
        print(f"qrobust {args.command}: interrupted{resume}", file=sys.stderr)
        status = 130  # 128 + SIGINT, the shell's convention
        return status
    finally:
        if status != 0:
            _remove_if_empty(created)


if __name__ == "__main__":
    sys.exit(main())
