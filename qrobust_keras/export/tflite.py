"""int8 TFLite export of Keras and QKeras models for microcontrollers, with a fidelity report.

Route (measured in docs/STACK.md; the straight conversion of a QKeras model leaves float ROUND/SELECT ops in the
graph): the quantized weights are copied into a plain Keras clone with BatchNorm folded
(:func:`qrobust_keras.export.clone.plain_clone`), the clone goes through full-integer post-training quantization with
a representative set (int8 input and output, ``TFLITE_BUILTINS_INT8`` only), the QKeras activation grids are written
into the int8 activation tensors (:func:`qrobust_keras.export.grids.patch_activation_grids`), and the result is
checked against the TFLite Micro int8 op whitelist and against the Keras model's own predictions.

Example:

>>> import numpy as np
>>> import qrobust_keras as qrk
>>> model = qrk.models.resnet8(policy="int4")
>>> x = np.random.default_rng(0).uniform(size=(64, 32, 32, 3)).astype("float32")
>>> info = qrk.export.export_tflite(model, "/tmp/resnet8_int4.tflite", representative_data=x, overwrite=True)
>>> info.op_counts["CONV_2D"], info.input_dtype
(9, 'int8')
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from qrobust_keras._checks import check_input_batch, image_range_of
from qrobust_keras._files import atomic_write
from qrobust_keras._keras import keras, tf
from qrobust_keras.export import flatbuffer, grids
from qrobust_keras.export.calibrate import calibrate_add_inputs, calibrate_logit_range
from qrobust_keras.export.clone import plain_clone
from qrobust_keras.export.runner import TFLiteModel

__all__ = ["export_tflite", "ExportInfo", "convert", "write_atomic", "ExportError"]


class ExportError(RuntimeError):
    """The converted file is not what was asked for (float/Flex/custom ops in an int8 export)."""


@dataclasses.dataclass
class ExportInfo:
    """What :func:`export_tflite` wrote and how well it matches the Keras model.

    Attributes:
        path: the written file. size_bytes: its size (= flash for the model data).
        int8: integer-only file (int8 input/output) or float file.
        op_counts: ``{op name: count}`` of the flatbuffer.
        input_dtype / output_dtype: ``"int8"`` or ``"float32"``.
        input_scale / input_zero_point / output_scale / output_zero_point: quantization parameters (0.0/0 float).
        n_fidelity: samples the fidelity was measured on.
        agreement: fraction of samples where the file's argmax equals the Keras model's argmax.
        top_ties: samples whose two highest scores in the file are equal: an int8 softmax output has 256 levels
            (step 1/256), so two classes closer than a step tie and argmax takes the lower index, whatever the
            Keras model chose. Many ties mean small decision margins, not a conversion error.
        agreement_untied: the agreement on the other samples, where the file's output can express a decision.
        accuracy_keras / accuracy_tflite: accuracies on the fidelity samples when labels were given, else None.
        fidelity_kernels: the interpreter kernels the file's side was measured with: ``"reference"`` for int8
            files (what TFLite Micro computes: LiteRT's default XNNPACK kernels round some int8 results
            differently, up to 16 output codes and 48 of 1,017 argmaxes apart on an int4 ResNet-8), ``"default"``
            for float files.
        max_score_diff: largest absolute difference between the file's and the Keras model's scores.
        folded: layers folded away (BatchNorm -> conv, Rescaling -> first conv).
        activation_grids: quantized ReLUs whose QKeras grid was written into the int8 file ``{layer: tensor}``.
        kernel_levels: ternary/binary layers and their levels per output channel.
        exact_kernels: quantized kernels stored as their exact integer codes ``{layer: filter tensor}``.
        notes: remarks (e.g. what could not be checked).
    """

    path: str
    size_bytes: int
    int8: bool
    op_counts: dict
    input_dtype: str
    output_dtype: str
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    n_fidelity: int = 0
    agreement: float | None = None
    top_ties: int | None = None
    agreement_untied: float | None = None
    accuracy_keras: float | None = None
    accuracy_tflite: float | None = None
    max_score_diff: float | None = None
    fidelity_kernels: str | None = None
    folded: dict = dataclasses.field(default_factory=dict)
    activation_grids: dict = dataclasses.field(default_factory=dict)
    kernel_levels: dict = dataclasses.field(default_factory=dict)
    exact_kernels: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text of the info; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False)
        if path is not None:
            write_atomic(path, text.encode(), overwrite=True)
        return text

    def runtime_label(self) -> str:
        """Which kernels the file's fidelity numbers come from, in words."""
        if self.fidelity_kernels == "reference":
            return "reference kernels (bit-identical to TFLite Micro on the models tested)"
        return "-" if self.fidelity_kernels is None else f"{self.fidelity_kernels} kernels"

    def to_markdown(self) -> str:
        def fmt(v: Any) -> str:
            return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

        ops = ", ".join(f"{k} x{v}" for k, v in self.op_counts.items())
        rows = [("file", self.path), ("size (bytes)", f"{self.size_bytes:,}"),
                ("kind", "int8 (integer only)" if self.int8 else "float"), ("ops", ops),
                ("input", f"{self.input_dtype}, scale {self.input_scale:.6g}, zero point {self.input_zero_point}"),
                ("output", f"{self.output_dtype}, scale {self.output_scale:.6g}, zero point {self.output_zero_point}"),
                ("fidelity samples", fmt(self.n_fidelity)), ("argmax agreement", fmt(self.agreement)),
                ("top-score ties in the file / agreement without them",
                 f"{fmt(self.top_ties)} / {fmt(self.agreement_untied)}"),
                ("accuracy Keras / file", f"{fmt(self.accuracy_keras)} / {fmt(self.accuracy_tflite)}"),
                ("file measured with", self.runtime_label()),
                ("max score difference", fmt(self.max_score_diff)),
                ("folded layers", fmt(len(self.folded))), ("exact activation grids", fmt(len(self.activation_grids))),
                ("exact kernel grids", fmt(len(self.exact_kernels)))]
        lines = ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
        return "\n".join(lines + [f"\n- {n}" for n in self.notes])


def write_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> str:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False. FileNotFoundError: the folder does not exist.
    """
    return atomic_write(path, data, overwrite=overwrite, make_dirs=False)


def _check_data(x: Any, model: keras.Model, argument: str, value_range: tuple[float, float] | None) -> np.ndarray:
    return check_input_batch(x, argument, value_range, sample_shape=tuple(model.input_shape[1:]))


def convert(model: keras.Model, representative_data: np.ndarray | None, int8: bool = True,
            calibration_samples: int = 500) -> bytes:
    """Run ``tf.lite.TFLiteConverter`` on a plain Keras model.

    int8: full-integer post-training quantization (``Optimize.DEFAULT``, ``TFLITE_BUILTINS_INT8``, int8 input and
    output) calibrated on the first ``calibration_samples`` rows of ``representative_data``; weights per output
    channel, activations per tensor. Otherwise a float32 file (``TFLITE_BUILTINS``).
    """
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        if representative_data is None:
            raise ValueError("representative_data is required for int8 export (the activation ranges are "
                             "calibrated on it)")
        calib = representative_data[:calibration_samples]

        def gen():
            for i in range(len(calib)):
                yield [calib[i:i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = gen
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _keras_scores(model: keras.Model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    # Keras' own compiled inference pass (export sits below the attacks and does not share their cached one)
    return np.asarray(model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0))


def _logits_layer(clone: keras.Model) -> str | None:
    """Name of the weight layer of ``clone`` that computes its class logits (None when there is no such layer)."""
    from qrobust_keras.models.heads import logits_tensor

    try:
        tensor, name, rebuilt = logits_tensor(clone)
    except ValueError:
        return None
    layer = clone.get_layer(name)
    if rebuilt is not None or type(layer).__name__ not in ("Dense", "Conv2D") or len(tensor.shape) != 2 or (
            tensor.shape[-1] or 0) < 2:
        return None
    return name


def export_tflite(model: keras.Model, path: str | os.PathLike, representative_data: Any, int8: bool = True,
                  labels: Any = None, overwrite: bool = False, fidelity_data: Any = None, logits: bool = False,
                  calibration_samples: int = 500, exact_activations: bool = True,
                  logit_range: str = "auto", input_range: Any = "auto") -> ExportInfo:
    """Export a Keras/QKeras classifier to a TFLite flatbuffer and measure how well the file matches it.

    Args:
        model: a ``tf_keras`` model (plain Keras and/or QKeras layers; see
            :func:`~qrobust_keras.export.clone.plain_clone` for what is supported).
        path: output ``.tflite`` file; written atomically.
        representative_data: model inputs (n, ...) in the model's input range ([0, 1] images for the library's
            models): the first ``calibration_samples`` calibrate the int8 activation ranges, and all of them measure
            fidelity unless ``fidelity_data`` is given. May be None for a float export (then no fidelity).
        int8: integer-only file with int8 input and output (default) or a float32 file.
        labels: int labels of the fidelity samples, for the accuracies.
        overwrite: replace an existing ``path``.
        fidelity_data: inputs (or ``(inputs, labels)``) to measure fidelity on instead of ``representative_data``.
        logits: export the pre-softmax logits instead of the softmax scores (useful for score-based attacks on the
            file; int8 softmax outputs saturate at 1/256 steps).
        calibration_samples: how many representative samples calibrate the int8 ranges.
        exact_activations: write each QKeras ``quantized_relu`` grid into its int8 tensor and store quantized
            kernels as their exact integer codes (see :func:`~qrobust_keras.export.grids.patch_exact_grids`);
            False keeps the converter's calibrated ranges, an explicit ReLU clip and its weight scales.
        logit_range: int8 range of the logits tensor in an int8 export: ``"argmax"`` spans only the values that can
            decide the argmax (:func:`~qrobust_keras.export.calibrate.calibrate_logit_range`; about twice as fine a
            step, so fewer top-2 ties; logits far below the top saturate), ``"minmax"`` keeps the converter's
            min/max over all classes. ``"auto"`` (default): ``"argmax"`` for a softmax output, ``"minmax"`` when
            ``logits=True`` (score-based attacks read every class's logit).
        input_range: ``(low, high)`` every representative and fidelity input must lie in, checked before anything is
            converted: calibrating on inputs of the wrong scale (0-255 pixels for a model trained on [0, 1])
            gives a file that agrees with itself on that data and is wrong on real inputs. ``"auto"`` (default):
            [0, 1] for RGB image models (:func:`~qrobust_keras._checks.image_range_of`), no range check otherwise;
            ``None``: no range check (inputs must still be finite).

    Returns:
        :class:`ExportInfo` (size, op counts, quantization, fidelity).

    Raises:
        ValueError: bad data shapes or arguments. FileExistsError: ``path`` exists and not ``overwrite``.
        UnsupportedLayerError: a layer without integer-only equivalent. ExportError: the converted graph holds ops
        outside the TFLite Micro int8 whitelist, or float ops in an int8 export.
    """
    if isinstance(model, (str, os.PathLike)):
        from qrobust_keras.models.io import load_model

        model = load_model(model, compile=False)
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a tf_keras Model (or a path to a saved one); got {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model must have one input and one output; got {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs")
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"path={path!r} exists; pass overwrite=True to replace it")
    if logit_range not in ("auto", "argmax", "minmax"):
        raise ValueError(f"logit_range must be 'auto', 'argmax' or 'minmax'; got {logit_range!r}")
    if logit_range == "auto":
        logit_range = "minmax" if logits else "argmax"
    if not isinstance(calibration_samples, int) or calibration_samples < 1:
        raise ValueError(f"calibration_samples must be a positive integer; got {calibration_samples!r}")
    if isinstance(input_range, str) and input_range == "auto":
        input_range = image_range_of(model)
    elif input_range is not None:
        ok = isinstance(input_range, (tuple, list)) and len(input_range) == 2
        ok = ok and all(isinstance(v, (int, float, np.integer, np.floating)) and np.isfinite(v) for v in input_range)
        if not ok or not input_range[0] < input_range[1]:
            raise ValueError(f"input_range must be 'auto', None or (low, high) with low < high; got {input_range!r}")
        input_range = (float(input_range[0]), float(input_range[1]))
    rep = None if representative_data is None else _check_data(representative_data, model, "representative_data",
                                                               input_range)
    if int8 and rep is None:
        raise ValueError("representative_data is required for int8 export; pass a few hundred training inputs")
    fid_x, fid_y = rep, labels
    if fidelity_data is not None:
        if isinstance(fidelity_data, tuple) and len(fidelity_data) == 2:
            fid_x, fid_y = fidelity_data
        else:
            fid_x, fid_y = fidelity_data, labels
        fid_x = _check_data(fid_x, model, "fidelity_data", input_range)
    if fid_y is not None:
        fid_y = np.asarray(fid_y)
        fid_y = fid_y.argmax(1) if fid_y.ndim == 2 else fid_y.reshape(-1)
        if fid_x is None or len(fid_y) != len(fid_x):
            raise ValueError(f"labels must have one entry per fidelity sample ({0 if fid_x is None else len(fid_x)});"
                             f" got {len(fid_y)}")

    source = model
    if logits:
        from qrobust_keras.models.heads import logits_model

        source = logits_model(model)
    clone, plan = plain_clone(source, relu_clip=not (int8 and exact_activations))
    data = convert(clone, rep, int8=int8, calibration_samples=calibration_samples)
    notes: list[str] = []
    applied: dict = {}
    kernels_applied: dict = {}
    output_ranges = {}
    if int8 and logit_range == "argmax":
        layer = _logits_layer(clone)
        if layer is not None:
            output_ranges[layer] = calibrate_logit_range(clone, rep[:calibration_samples], layer)
            notes.append(f"int8 logits span [{output_ranges[layer][0]:.3g}, {output_ranges[layer][1]:.3g}] "
                         "(argmax-preserving range; logit_range='minmax' keeps the converter's)")
    if int8 and (plan.activation_grids or plan.kernel_steps or plan.output_grids or output_ranges):
        if exact_activations:
            add_ranges = calibrate_add_inputs(clone, plan, rep[:calibration_samples])
            data, applied, kernels_applied = grids.patch_exact_grids(data, plan.activation_grids,
                                                                     plan.kernel_steps, add_ranges,
                                                                     plan.output_grids, output_ranges)
        else:
            if output_ranges:
                data, _, _ = grids.patch_exact_grids(data, output_ranges=output_ranges)
            notes.append("QKeras grids not written (exact_activations=False): int8 ranges calibrated")
    elif not int8 and plan.activation_grids:
        notes.append("float file: quantized ReLUs are clipped ReLUs without the QKeras rounding grid")
    fb_model = flatbuffer.read_model(data)
    if int8:
        problems = flatbuffer.check_int8_ops(fb_model)
        if problems:
            raise ExportError("the converted int8 graph is not integer-only TFLite Micro: " + "; ".join(problems[:8]))
    else:
        bad = [name for _, _, name in flatbuffer.op_names(fb_model) if ":" in name]
        if bad:
            raise ExportError(f"the converted float graph holds non-builtin ops {sorted(set(bad))}")
    try:
        import ai_edge_litert.interpreter  # noqa: F401

        runtime = "litert"
    except ImportError:  # the tflite extra is optional: TensorFlow's own interpreter measures fidelity then
        runtime = "tflite"
    # The claims about an int8 file are about what the microcontroller computes: the reference kernels, not the
    # optimized ones (they round some int8 results differently). 1,017 images take about 4 s this way.
    kernels = "reference" if int8 else "default"
    runner = TFLiteModel(data, runtime=runtime, kernels=kernels)
    if int8 and not runner.is_int8:
        raise ExportError(f"int8 export produced {runner.input_dtype} input / {runner.output_dtype} output")
    info = ExportInfo(path=path, size_bytes=len(data), int8=bool(int8), op_counts=flatbuffer.op_counts(fb_model),
                      input_dtype=runner.input_dtype.name, output_dtype=runner.output_dtype.name,
                      input_scale=runner.input_scale, input_zero_point=runner.input_zero_point,
                      output_scale=runner.output_scale, output_zero_point=runner.output_zero_point,
                      folded=dict(plan.folded), activation_grids=applied, kernel_levels=dict(plan.kernel_levels),
                      exact_kernels=kernels_applied,
                      notes=notes)
    if fid_x is not None:
        ref = _keras_scores(source, fid_x)
        got = runner.predict(fid_x)
        info.n_fidelity = int(len(fid_x))
        info.fidelity_kernels = kernels
        agree = ref.argmax(1) == got.argmax(1)
        top2 = np.sort(got.reshape(len(got), -1), axis=1)[:, -2:]
        tied = top2[:, 0] == top2[:, -1] if top2.shape[1] == 2 else np.zeros(len(got), bool)
        info.agreement = float(np.mean(agree))
        info.top_ties = int(tied.sum())
        info.agreement_untied = float(np.mean(agree[~tied])) if (~tied).any() else None
        info.max_score_diff = float(np.abs(ref - got).max())
        if fid_y is not None:
            info.accuracy_keras = float(np.mean(ref.argmax(1) == fid_y))
            info.accuracy_tflite = float(np.mean(got.argmax(1) == fid_y))
    write_atomic(path, data, overwrite=overwrite)
    return info
