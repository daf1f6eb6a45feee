"""TFLite Micro footprint of a .tflite file: tensor-arena bytes actually used, flash bytes, op support.

Runs the file in the TFLite Micro host interpreter (``tflite-micro`` on PyPI: the same kernels and memory planner
as on the device), reads the arena usage its ``RecordingMicroAllocator`` reports, and checks that the file also
runs with an arena of exactly that size.

Reference: the official MLCommons Tiny int8 ResNet-8 (``pretrainedResnet_quant.tflite``) needs 55,984 arena bytes
and is 98,496 bytes large (Banbury et al. 2021, arXiv 2106.07597; figures measured with this function).

Example:

>>> from qrobust_keras.export import tflm_footprint
>>> fp = tflm_footprint("resnet8_int8.tflite")      # doctest: +SKIP
>>> fp.arena_bytes, fp.flash_bytes, fp.all_ops_supported   # doctest: +SKIP
(55952, 95184, True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import tempfile
from typing import Any, Iterator

import numpy as np

from qrobust_keras.export import flatbuffer
from qrobust_keras.export.runner import load_tflite_bytes

__all__ = ["tflm_footprint", "TFLMFootprint", "MLCOMMONS_RESNET8_INT8"]

# The official MLCommons Tiny v1.x int8 ResNet-8 (training/image_classification/trained_models/
# pretrainedResnet_quant.tflite), for comparison: TFLM arena bytes and file (flash) bytes.
MLCOMMONS_RESNET8_INT8 = {"arena_bytes": 55_984, "flash_bytes": 98_496}


@dataclasses.dataclass
class TFLMFootprint:
    """Memory a .tflite file needs under TensorFlow Lite Micro.

    Attributes:
        arena_bytes: tensor-arena bytes the interpreter allocated (``head + tail``; activations, persistent
            buffers, node structs), as reported by the RecordingMicroAllocator after one ``invoke()``.
        arena_head_bytes / arena_tail_bytes: the non-persistent (activation planner) and persistent parts.
        flash_bytes: the model data size (file size; what ``model_data.cc`` puts in flash).
        all_ops_supported: whether TFLite Micro built the interpreter and ran the file.
        arena_verified: whether an interpreter with exactly ``arena_bytes`` of arena also ran it.
        op_counts: ``{op: count}`` of the file. unsupported: ops outside the TFLM int8 whitelist, or the error text.
        allocations: the allocator's per-kind lines ``{kind: bytes}``.
    """

    arena_bytes: int | None
    arena_head_bytes: int | None
    arena_tail_bytes: int | None
    flash_bytes: int
    all_ops_supported: bool
    arena_verified: bool
    op_counts: dict
    unsupported: list = dataclasses.field(default_factory=list)
    allocations: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_markdown(self) -> str:
        ref = MLCOMMONS_RESNET8_INT8
        return "\n".join([
            "| | this file | MLCommons int8 ResNet-8 |", "|---|---|---|",
            f"| TFLM arena (bytes) | {self.arena_bytes:,} | {ref['arena_bytes']:,} |" if self.arena_bytes else
            "| TFLM arena (bytes) | - | 55,984 |",
            f"| flash (bytes) | {self.flash_bytes:,} | {ref['flash_bytes']:,} |",
            f"| all ops supported | {self.all_ops_supported} | True |"])


@contextlib.contextmanager
def _capture_fd(fd: int) -> Iterator[list]:
    """Capture what C/C++ code writes to file descriptor ``fd`` (stderr) into a one-element list."""
    out: list = []
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield out
        finally:
            try:
                sys.stderr.flush()
            except Exception:  # noqa: BLE001
                pass
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode(errors="replace"))


def _run_once(interp: Any) -> None:
    details = interp.get_input_details(0)
    shape = [int(d) for d in details["shape"]]
    dtype = np.dtype(details["dtype"])
    interp.set_input(np.zeros(shape, dtype), 0)
    interp.invoke()


def tflm_footprint(tflite_path: Any, arena_size: int | None = None) -> TFLMFootprint:
    """Run a .tflite file once in the TFLite Micro host interpreter and report its memory footprint.

    Args:
        tflite_path: path to the file, or its bytes.
        arena_size: arena to give the recording interpreter (default: 10x the file size, enough for small models).

    Returns:
        :class:`TFLMFootprint`. ``all_ops_supported`` is False (with the reason in ``unsupported``) when TFLite Micro
        cannot build or run the graph; the arena figures are then None.

    Raises:
        FileNotFoundError / TFLiteFormatError: missing or non-TFLite file. ImportError: ``tflite-micro`` missing.
    """
    data = load_tflite_bytes(tflite_path, "tflite_path")
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as exc:  # pragma: no cover - the tflite extra installs it
        raise ImportError("tflm_footprint needs the TFLite Micro host interpreter: pip install tflite-micro") from exc
    model = flatbuffer.read_model(data)
    counts = flatbuffer.op_counts(model)
    unsupported = [f"{name} is not an int8 builtin of TFLite Micro" for name in counts
                   if name not in flatbuffer.TFLM_INT8_OPS]
    fp = TFLMFootprint(None, None, None, len(data), False, False, counts, unsupported)
    try:
        with _capture_fd(2) as captured:
            interp = runtime.Interpreter.from_bytes(data, arena_size=arena_size)
            _run_once(interp)
            interp.print_allocations()
    except (RuntimeError, ValueError) as exc:
        text = captured[0] if captured else ""
        fp.unsupported.append(f"TFLite Micro failed: {exc} {text.strip()[-300:]}".strip())
        return fp
    text = captured[0]
    total = re.search(r"Arena allocation total (\d+) bytes", text)
    head = re.search(r"Arena allocation head (\d+) bytes", text)
    tail = re.search(r"Arena allocation tail (\d+) bytes", text)
    fp.all_ops_supported = not unsupported
    if total:
        fp.arena_bytes = int(total.group(1))
        fp.arena_head_bytes = int(head.group(1)) if head else None
        fp.arena_tail_bytes = int(tail.group(1)) if tail else None
    for kind, used in re.findall(r"'([^']+)' used (\d+) bytes", text):
        fp.allocations[kind] = int(used)
    if fp.arena_bytes:
        try:
            with _capture_fd(2):
                exact = runtime.Interpreter.from_bytes(data, arena_size=fp.arena_bytes)
                _run_once(exact)
            fp.arena_verified = True
        except (RuntimeError, ValueError):
            fp.arena_verified = False
    return fp
