"""export_files: a model's deployable files in one folder: the (int8) ``.tflite``, ``export.json`` with its size,
fidelity and TFLite Micro footprint, and optionally a C array. What ``qrobust export`` and the model zoo write.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="int4")
>>> x = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype("float32")
>>> path, summary = qrk.export.export_files(model, "r8", "/tmp/qrk_bundle", representative_data=x)
>>> summary["export"]["int8"], path.endswith("r8.int8.tflite")
(True, True)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from qrobust_keras._files import atomic_write

__all__ = ["export_files"]


def _as_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return obj


def export_files(model: Any, name: str, out_dir: str | os.PathLike, *, representative_data: np.ndarray | None = None,
                 int8: bool = True, fidelity_data: tuple[np.ndarray, np.ndarray] | None = None,
                 c_array: bool = False) -> tuple[str, dict[str, Any]]:
    """Export ``model`` to ``out_dir/NAME(.int8).tflite`` and write ``out_dir/export.json``.

    Args:
        model: the Keras model (QKeras layers allowed).
        name: base name of the files (e.g. the model file's name without suffix).
        out_dir: output folder (created).
        representative_data: calibration inputs (required for ``int8``), in the model's input range.
        int8: integer-only file (see :func:`~qrobust_keras.export.export_tflite`).
        fidelity_data: ``(x, y)`` on which the file's accuracy and argmax agreement with ``model`` are measured.
        c_array: also write the file as a C array.

    Returns:
        ``(tflite_path, summary)``: ``summary`` is what ``export.json`` holds (``export``: the
        :class:`~qrobust_keras.export.ExportInfo`, ``tflm``: the TFLite Micro footprint or ``tflm_error``, and
        ``c_array``), plus ``markdown`` (the export table, not written to the JSON).

    Raises:
        ValueError: ``int8`` without ``representative_data``.
    """
    from qrobust_keras.export.c_array import to_c_array
    from qrobust_keras.export.tflite import export_tflite
    from qrobust_keras.export.tflm import tflm_footprint

    if int8 and representative_data is None:
        raise ValueError("int8=True needs representative_data: calibration inputs in the model's input range")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.fspath(out_dir), name + (".int8" if int8 else "") + ".tflite")
    kwargs = {} if fidelity_data is None else {"fidelity_data": fidelity_data}
    info = export_tflite(model, path, representative_data=representative_data, int8=int8, overwrite=True, **kwargs)
    summary: dict[str, Any] = {"export": info.to_dict()}
    try:
        summary["tflm"] = _as_dict(tflm_footprint(path))
    except Exception as exc:  # noqa: BLE001 - reported in export.json (e.g. tflite-micro not installed), not hidden
        summary["tflm_error"] = f"{type(exc).__name__}: {exc}"
    if c_array:
        summary["c_array"] = _as_dict(to_c_array(path, os.fspath(out_dir)))
    atomic_write(os.path.join(os.fspath(out_dir), "export.json"), json.dumps(summary, indent=2, default=str))
    return path, dict(summary, markdown=info.to_markdown())
