"""The ``qrobust`` command.

Example::

    qrobust demo --data-dir ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from qrobust_keras.demo import run_demo

    return run_demo(data_dir=args.data_dir, out=args.out, quick=args.quick, verbose=args.verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qrobust", description="Robust tiny quantized Keras models for MCUs.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train, attack and report a float and a robust quantized ResNet-8",
                          description="Train a float and a robust quantized ResNet-8 briefly on CIFAR-10, attack "
                                      "both and write a report.")
    demo.add_argument("--data-dir", default=None, help="CIFAR-10 folder (pickle batches or class-folder images); "
                                                        "default: $QROBUST_DATA_DIR, then the Keras cache")
    demo.add_argument("--out", default="demo_report", help="report folder (default: demo_report)")
    demo.add_argument("--quick", action="store_true", help="a smaller, faster run (for CI)")
    demo.add_argument("--verbose", type=int, default=1, help="0 = silent, 1 = progress (default)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
