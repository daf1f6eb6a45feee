"""The ``qrobust`` argument parser and the parsers of its values (budgets, attack names, policies).

Building the parser and parsing import no TensorFlow (only ``--policy`` needs QKeras to check spec names), so
``--help`` and argument errors answer at once.

Example:

>>> from qrobust_keras.cli.parsing import parse_eps_list
>>> parse_eps_list("8/255,2/255")
[0.00784313725490196, 0.03137254901960784]
"""

from __future__ import annotations

import argparse
import json

from qrobust_keras._checks import parse_eps, parse_eps_list
from qrobust_keras.attacks import registry
from qrobust_keras.cli import commands

__all__ = ["build_parser", "parse_eps", "parse_eps_list", "parse_attacks", "parse_policy", "parse_shard", "RECIPES",
           "DATASETS", "ATTACKS"]

RECIPES = ("mlcommons", "stq_jr", "stq_jr_at", "int4_at")  # a literal: parsing must not import TensorFlow
AT_METHODS = ("pgd", "nfgsm", "trades")
DATASETS = ("cifar10", "svhn", "speech_commands")
# The attacks `qrobust evaluate` runs by name, from the registry (ART's decision-based attacks are left to the API).
ATTACKS = tuple(a for a in registry.list_attacks() if a not in ("hopskipjump", "boundary", "zoo")) + ("apgd",)

def parse_attacks(text: str) -> list[str]:
    """Comma-separated attack names of the registry (``apgd`` is APGD-CE)."""
    names = [p.strip().lower() for p in str(text).split(",") if p.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise ValueError(f"--attacks got unknown name(s) {unknown or [text]}; accepted: {', '.join(ATTACKS)}")
    return list(dict.fromkeys(names))


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N``: shard ``I`` of ``N``, counted from 0 (``"0/4"`` .. ``"3/4"``) -> ``(I, N)``.

    Raises:
        ValueError: text that is not two integers ``I/N`` with ``0 <= I < N``; the message names the value.
    """
    raw = str(text).strip()
    parts = raw.split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        index = count = None
    if index is None or not 0 <= index < count:
        hint = f" (shards count from 0: the last of {count} is {count - 1}/{count})" \
            if index is not None and count > 0 and index == count else ""
        raise ValueError(f"--shard must be I/N with 0 <= I < N (shard I of N, counted from 0, e.g. 0/4); got --shard "
                         f"{raw!r}{hint}")
    return index, count


def parse_policy(text: str) -> dict:
    """A quantization policy from the command line: a spec name (``int4``) or a JSON object of
    :class:`~qrobust_keras.quantization.QuantPolicy` fields, e.g.
    ``{"kernel": "int4", "activation": "int4", "overrides": {"conv_1": "int8", "logits": "int8"}}``.
    Returns the policy's config dict. (Checking the spec names needs QKeras, so this one option imports
    TensorFlow while parsing.)"""
    text = str(text).strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--policy is not valid JSON ({exc.msg} at character {exc.pos}); got {text!r}") from None
    else:
        spec = text
    from qrobust_keras.cli.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()
    from qrobust_keras.quantization import QuantPolicy

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


def _add_common(p: argparse.ArgumentParser, seed: bool = True) -> None:
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="0 = silent, 1 = progress (default), 2 = also TensorFlow's own log lines")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of sampling, initialisation and attacks (default 0)")


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, default="cifar10", help="dataset (default cifar10)")
    p.add_argument("--data-dir", default=None,
                   help="dataset folder; CIFAR-10 default: $QROBUST_DATA_DIR, then the Keras cache")
    p.add_argument("--download", action="store_true",
                   help="CIFAR-10 only: when no copy is found, download it with Keras (about 163 MB) into the Keras "
                        "cache")
    p.add_argument("--source", choices=["auto", "pickle", "images"], default="auto",
                   help="CIFAR-10 files to read: exact python batches (preferred by auto) or an image tree")


def build_parser() -> argparse.ArgumentParser:
    """The ``qrobust`` argument parser (building it imports no TensorFlow)."""
    parser = argparse.ArgumentParser(prog="qrobust", description="Robust tiny quantized Keras models for MCUs: "
                                     "train recipes, attack honestly, export int8 TFLite.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a named recipe into a resumable run folder",
                       description="Train a recipe (mlcommons, stq_jr, stq_jr_at, int4_at). The run folder gets "
                                   "run_config.json, history.csv, last.h5 after every epoch, backup/ "
                                   "(BackupAndRestore: rerun the same command to resume a killed run) and model.h5.")
    p.add_argument("--model", choices=["resnet8", "ds_cnn"], default=None,
                   help="architecture (default: resnet8 for images, ds_cnn for speech_commands)")
    p.add_argument("--recipe", choices=RECIPES, default="stq_jr",
                   help="training recipe (default stq_jr; see qrobust_keras.recipes)")
    _add_data(p)
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the recipe's)")
    p.add_argument("--train-samples", type=int, default=None, help="train on a random subset of this size")
    p.add_argument("--val-samples", type=int, default=None,
                   help="validate on a random subset of the test split of this size (0: no validation)")
    p.add_argument("--out", required=True, help="run folder (created; reuse it to resume)")
    p.add_argument("--at-eps", type=_usage_checked(parse_eps), default=None, metavar="EPS",
                   help="adversarial-training budget instead of the recipe's (e.g. 8/255; audio: MFCC units)")
    p.add_argument("--at-ratio", type=float, default=None, metavar="R",
                   help="fraction of each batch replaced by adversarial examples (default: the recipe's)")
    p.add_argument("--robust-val", type=_usage_checked(parse_eps), default=None, metavar="EPS",
                   help="after every epoch, measure the accuracy under PGD-10 at this budget on the first "
                        "--robust-val-samples validation samples (history.csv column val_pgd_accuracy): shows "
                        "catastrophic or robust overfitting")
    p.add_argument("--robust-val-samples", type=int, default=256, metavar="N",
                   help="validation samples --robust-val attacks (default 256)")
    p.add_argument("--at-method", choices=AT_METHODS, default=None,
                   help="adversarial examples for training: pgd (PGD with --at-ratio), nfgsm (single-step N-FGSM, de "
                        "Jorge et al. 2022) or trades (default: the recipe's)")
    p.add_argument("--filters", type=int, default=None, metavar="F",
                   help="network width: ResNet-8 stacks of F, 2F, 4F filters, DS-CNN channels (default: the MLCommons "
                        "model's 16 / 64, the only width the official weights fit; wider needs --init-weights none)")
    p.add_argument("--policy", type=_usage_checked(parse_policy), default=None,
                   help="layer bit-widths instead of the recipe's: a spec name (float, int8, int4, int2, ternary, "
                        "stochastic_ternary, binary, stochastic_binary) or a JSON QuantPolicy, e.g. '{\"kernel\": "
                        "\"int4\", \"activation\": \"int4\", \"overrides\": {\"conv_1\": \"int8\"}}'")
    p.add_argument("--init-weights", default=None, metavar="MODEL",
                   help="start from the weights of this saved model (layer names must match), e.g. an stq_jr "
                        "run's model.h5 for adversarial fine-tuning with --recipe stq_jr_at, or zoo:NAME (a shipped "
                        "model); 'mlcommons' or 'mlcommons:DIR' starts from the official MLCommons Tiny float "
                        "weights (DIR defaults to $QROBUST_MLCOMMONS_DIR); 'none' trains from random weights "
                        "(default: the recipe's start, 'mlcommons' for int4_at, random weights for the others)")
    p.add_argument("--strategy", choices=("default", "mirrored", "multi-worker"), default="default",
                   help="tf.distribute strategy: default (one device), mirrored (the GPUs of this machine), "
                        "multi-worker (several processes or machines, from $TF_CONFIG; run the same command on "
                        "every worker, the chief writes --out; see docs/distributed.md)")
    _add_common(p)
    p.set_defaults(func=commands.cmd_train)

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
        p.add_argument("--suite", choices=("standard", "rand", "quick"), default=None,
                       help="a named evaluation instead of --attacks: standard (AutoAttack's standard version: "
                            "APGD-CE, APGD-T, FAB-T, Square-5000 x5 as a cascade; a model random at inference gets the "
                            "rand version), rand, or quick (labelled 'quick (not standard)')")
        p.add_argument("--source-model", default=None, metavar="KERAS_MODEL",
                       help="for a .tflite MODEL: the Keras model it was exported from; white-box attacks transfer "
                            "from it (without it a .tflite gets black-box attacks only: an upper bound)")
        p.add_argument("--tflite-kernels", choices=("reference", "builtin", "default"), default="reference",
                       help="for a .tflite MODEL: the interpreter kernels every prediction is scored with: reference "
                            "(default: what TFLite Micro computes), builtin or default (LiteRT's optimized kernels, "
                            "which round some int8 results differently). Black-box attacks search on the default "
                            "kernels (about 20x faster) either way")
        p.add_argument("--eps", type=_usage_checked(parse_eps_list), default=parse_eps_list("2/255,8/255"),
                       help="comma-separated L-inf budgets as fractions or decimals (default 2/255,8/255)")
        p.add_argument("-n", "--n", type=int, default=500, help="test samples (default 500; first n of a seeded "
                                                                "permutation)")
        p.add_argument("--steps", type=int, default=None,
                       help="iterations of PGD/BIM/MIM/APGD/SPSA (default: the attack registry's: PGD 20, APGD 100)")
        p.add_argument("--queries", type=int, default=None,
                       help="Square attack queries per sample (default: the registry's 1000)")
        p.add_argument("--batch-size", type=int, default=256,
                       help="attack batch size, also the seed block: attacks run per block of this many samples "
                            "with a seed per block, so a sample's result never depends on the others (default 256; "
                            "a .tflite MODEL uses blocks of 256)")
        p.add_argument("--shard", type=_usage_checked(parse_shard), default=None, metavar="I/N",
                       help="evaluate only shard I of N (0 <= I < N) of the -n samples: whole seed blocks, in order; "
                            "merge the N --out folders with `qrobust report --merge DIR... --out DIR` "
                            "(docs/distributed.md)")
        p.add_argument("--out", default="report", help="report folder (default report)")
        _add_common(p)
        p.set_defaults(func=commands.cmd_evaluate)

    p = sub.add_parser("export", help="export a Keras model to (int8) TFLite, optionally as a C array",
                       description="Export MODEL (.h5/.keras/SavedModel) to TFLite. --int8 makes an integer-only "
                                   "file calibrated on --representative-data; --c-array also writes a C source "
                                   "file. Writes export.json with size, fidelity and the TFLite Micro footprint.")
    p.add_argument("model", metavar="MODEL", help="model file or SavedModel folder")
    p.add_argument("--int8", action="store_true", help="integer-only int8 file (needs --representative-data)")
    p.add_argument("--representative-data", default=None,
                   help="dataset folder (read as --dataset) or a .npy of model inputs for int8 calibration")
    p.add_argument("--dataset", choices=DATASETS, default="cifar10",
                   help="dataset of --representative-data (default cifar10)")
    p.add_argument("--samples", type=int, default=500, help="calibration/fidelity samples (default 500)")
    p.add_argument("--c-array", action="store_true", help="also write the model as a C array")
    p.add_argument("--out", default="export", help="output folder (default export)")
    _add_common(p, seed=False)
    p.set_defaults(func=commands.cmd_export)

    p = sub.add_parser("report", help="markdown report and plots of a run folder, or merge evaluation shards",
                       description="Write RUN_DIR/report.md with training curves (history.csv -> training.png) "
                                   "and every evaluation.json found under RUN_DIR (-> accuracy_vs_eps.png). With "
                                   "--merge DIR... --out DIR: join the --out folders of `qrobust evaluate --shard "
                                   "I/N` (all N shards) into one evaluation, written as `qrobust evaluate` writes "
                                   "its own (evaluation.json, evaluation.md, accuracy_vs_eps.png).")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", default=None, help="run folder of `qrobust train`")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="the --out folders of `qrobust evaluate --shard I/N`, one per shard, in any order")
    p.add_argument("--out", default=None, help="report file (default RUN_DIR/report.md); with --merge, the folder of "
                                               "the merged evaluation (required)")
    _add_common(p, seed=False)
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("demo", help="train, attack and report a float and a robust quantized ResNet-8",
                       description="Train a float and an stq_jr ResNet-8 briefly on CIFAR-10 (or, when no copy is "
                                   "found, on a generated image task labelled synthetic), attack both, export the "
                                   "robust one to int8, check it in TFLite Micro and write a report.")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (pickle batches or class-folder images); "
                                                    "default: $QROBUST_DATA_DIR, then the Keras cache")
    p.add_argument("--download", action="store_true",
                   help="when no CIFAR-10 copy is found, download it with Keras (about 163 MB) instead of using the "
                        "synthetic task")
    p.add_argument("--out", default="demo_report", help="report folder (default demo_report)")
    p.add_argument("--quick", action="store_true", help="a much smaller run (for CI)")
    _add_common(p, seed=False)
    p.set_defaults(func=commands.cmd_demo)

    p = sub.add_parser("zoo", help="list the shipped robust models or show one's model card",
                       description="The model zoo: trained robust models with int8 files and model cards. Any MODEL "
                                   "argument also takes zoo:NAME (the Keras model) or zoo:NAME.tflite (its int8 file).")
    p.add_argument("action", choices=["list", "show"], help="list the models, or show NAME's card")
    p.add_argument("name", nargs="?", default=None, metavar="NAME", help="zoo model name (for show)")
    _add_common(p, seed=False)
    p.set_defaults(func=commands.cmd_zoo)
    return parser


