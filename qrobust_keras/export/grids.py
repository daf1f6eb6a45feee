"""QKeras grids written into a converted int8 TFLite file, so that the device computes what the QKeras model computes.

The converter calibrates every int8 tensor from min/max statistics; a QKeras model instead has exact grids: a
``quantized_relu(b, i)`` outputs multiples of ``2^(i-b)``, a quantized kernel multiples of a per-channel step.
:func:`patch_exact_grids` rewrites the file's scales, zero points, filter codes and int32 biases to those grids
(docs/export.md, "How the export works", step 3); :mod:`qrobust_keras.export.tflite` calls it after conversion.

Example:

>>> from qrobust_keras.export import grids
>>> data, acts, kernels = grids.patch_exact_grids(open("model.tflite", "rb").read(),        # doctest: +SKIP
...                                               {"relu_1": (0.25, 16)}, {"conv_1": step})
>>> acts                                                                                    # doctest: +SKIP
{'relu_1': 'model/relu_1/Relu;model/conv_1/BiasAdd;...'}
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from qrobust_keras.export.flatbuffer import (op_code_name, read_model, schema, tensor_name, tensor_type_name,
                                             tensor_values, write_model)

__all__ = ["patch_exact_grids", "patch_activation_grids", "SCALE_PRESERVING_OPS"]

# Ops whose int8 kernels require the output to carry the input's scale and zero point.
SCALE_PRESERVING_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "MAX_POOL_2D", "AVERAGE_POOL_2D",
                                  "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "TRANSPOSE", "STRIDED_SLICE", "SLICE",
                                  "PAD", "GATHER"})

def _qparams(tensor: Any) -> tuple[np.ndarray, np.ndarray] | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return np.asarray(q.scale, np.float64), np.asarray(q.zeroPoint, np.int64)


_WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def _producer_index(sub: Any) -> tuple[dict, dict]:
    producers, consumers = {}, collections.defaultdict(list)
    for i, op in enumerate(sub.operators):
        for t in op.outputs:
            producers[int(t)] = i
        for t in op.inputs:
            if t >= 0:
                consumers[int(t)].append(i)
    return producers, consumers


def patch_exact_grids(data: bytes, activation_grids: dict | None = None, kernel_steps: dict | None = None,
                      add_input_ranges: dict | None = None, output_grids: dict | None = None,
                      output_ranges: dict | None = None) -> tuple[bytes, dict, dict]:
    """Write QKeras grids into an int8 file so that the device computes what the QKeras model computes.

    Activations: a QKeras ``quantized_relu(b, i)`` outputs ``k * step`` with ``step = 2^(i-b)``,
    ``k = 0 .. 2^b - 1``. Its int8 tensor is set to ``scale = step`` and ``zero_point = 127 - (2^b - 1)``: the ReLU
    fused into the producing op clamps at code ``zero_point`` (value 0), int8 saturation clamps at code 127 (value
    ``(2^b - 1) * step``), and requantization rounds to the grid. The parameters are propagated through ops whose
    int8 kernels keep their input's parameters (pooling, reshape).

    Kernels: a quantized kernel holds ``k * step[c]`` with small integers ``k``; the converter's per-channel int8
    scale ``max|w| / 127`` stores ``k`` only approximately (for 4-bit grids), so the filter is rewritten as codes
    ``k`` with ``scale = step[c]``.

    Every weight op whose input or filter scale changed gets its int32 bias re-quantized to ``input_scale *
    filter_scale`` (TFLite checks that product), from the bias values of the converted file.

    Args:
        data: int8 flatbuffer bytes.
        activation_grids: ``{activation layer name: (step, levels)}``; a tensor belongs to a layer when its name
            contains ``<layer>/Relu`` (the converter's naming of fused ops).
        kernel_steps: ``{weight layer name: per-output-channel step}``; the op is found by ``<layer>/`` in the name
            of its output, filter or bias tensor (the model's final output tensor is renamed by the converter).
        add_input_ranges: ``{weight layer name: (lo, hi)}``, clipping ranges of layer outputs that enter an ADD in
            front of an activation grid (see :mod:`qrobust_keras.export.calibrate`); others keep their calibrated
            range, narrowed where that is exact (see ``_tighten_add_inputs``).
        output_grids: ``{weight layer name: step}``: that op's output tensor is a signed QKeras grid (``scale =
            step``, ``zero_point = 0``; see :func:`qrobust_keras.quantization.layers.add_input`), found like the
            ops of ``kernel_steps``.
        output_ranges: ``{weight layer name: (lo, hi)}``: that op's output tensor spans ``[lo, hi]`` (with ``lo <= 0
            <= hi``) instead of its calibrated min/max, e.g. the logits range that keeps the argmax
            (:func:`qrobust_keras.export.calibrate.calibrate_logit_range`).

    Returns:
        ``(patched bytes, {activation layer: tensor name}, {weight layer: filter tensor name})``.

    Raises:
        ValueError: a layer has no tensor in the file, a tensor is not int8, or a filter is not on the given grid.
    """
    import re

    fb = schema()
    model = read_model(data)
    sub = model.subgraphs[0]
    producers, consumers = _producer_index(sub)
    real_bias: dict[int, np.ndarray] = {}
    for op in sub.operators:
        if op_code_name(model, op.opcodeIndex) in _WEIGHT_OPS and len(op.inputs) > 2 and op.inputs[2] >= 0:
            values, q = tensor_values(model, int(op.inputs[2])), _qparams(sub.tensors[op.inputs[2]])
            if values is not None and q is not None:
                real_bias[int(op.inputs[2])] = values.astype(np.float64) * q[0]
    changed_ops: set[int] = set()

    applied_act: dict[str, str] = {}
    new_params: dict[int, tuple[float, int]] = {}
    for layer, (step, levels) in (activation_grids or {}).items():
        pattern = re.compile(rf"(^|[/;]){re.escape(layer)}/Relu($|[;:/])")
        found = [t for t, tensor in enumerate(sub.tensors) if pattern.search(tensor_name(tensor)) and t in producers]
        if not found:
            raise ValueError(f"quantized activation {layer!r}: no tensor named '{layer}/Relu' in the converted file")
        t = found[-1]
        if sub.tensors[t].type != fb.TensorType.INT8:
            raise ValueError(f"quantized activation {layer!r}: tensor {tensor_name(sub.tensors[t])!r} is "
                             f"{tensor_type_name(sub.tensors[t].type)}, not INT8")
        if levels > 256:
            raise ValueError(f"quantized activation {layer!r} has {levels} levels; int8 holds at most 256")
        new_params[t] = (float(step), int(127 - (levels - 1)))
        applied_act[layer] = tensor_name(sub.tensors[t])
    for layer, step in (output_grids or {}).items():
        i = _weight_op(model, sub, layer)
        t = int(sub.operators[i].outputs[0])
        if sub.tensors[t].type != fb.TensorType.INT8:
            raise ValueError(f"quantized output of {layer!r}: tensor {tensor_name(sub.tensors[t])!r} is "
                             f"{tensor_type_name(sub.tensors[t].type)}, not INT8")
        new_params[t] = (float(step), 0)
        applied_act[layer] = tensor_name(sub.tensors[t])
    queue = list(new_params)
    while queue:
        t = queue.pop()
        for i in consumers.get(t, []):
            op = sub.operators[i]
            if op_code_name(model, op.opcodeIndex) in SCALE_PRESERVING_OPS and int(op.inputs[0]) == t:
                out = int(op.outputs[0])
                if _qparams(sub.tensors[out]) is not None and out not in new_params:
                    new_params[out] = new_params[t]
                    queue.append(out)
    for t, (scale, zp) in new_params.items():
        q = sub.tensors[t].quantization
        q.scale = np.asarray([scale], np.float32)
        q.zeroPoint = np.asarray([zp], np.int64)
        q.min = None
        q.max = None
        changed_ops.update(i for i in consumers.get(t, []) if int(sub.operators[i].inputs[0]) == t)

    for layer, (lo, hi) in (output_ranges or {}).items():
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        if not hi > lo:
            raise ValueError(f"output range of {layer!r} must have lo < hi; got ({lo}, {hi})")
        q = sub.tensors[int(sub.operators[_weight_op(model, sub, layer)].outputs[0])].quantization
        scale = (hi - lo) / 255.0
        q.scale = np.asarray([scale], np.float32)
        q.zeroPoint = np.asarray([int(np.clip(np.round(-128 - lo / scale), -128, 127))], np.int64)
        q.min = None
        q.max = None
    if new_params:
        _tighten_add_inputs(model, sub, new_params, producers, consumers, add_input_ranges or {})

    applied_kernel: dict[str, str] = {}
    for layer, step in (kernel_steps or {}).items():
        ops = [_weight_op(model, sub, layer)]
        op = sub.operators[ops[0]]
        ft = sub.tensors[op.inputs[1]]
        values, q = tensor_values(model, int(op.inputs[1])), _qparams(ft)
        if values is None or q is None or ft.type != fb.TensorType.INT8:
            raise ValueError(f"quantized kernel {layer!r}: filter {tensor_name(ft)!r} is not a constant int8 tensor")
        axis = int(ft.quantization.quantizedDimension or 0)
        step = np.asarray(step, np.float64)
        if values.shape[axis] != step.size or q[0].size not in (1, step.size):
            raise ValueError(f"quantized kernel {layer!r}: {step.size} channel steps for a filter of shape "
                             f"{values.shape} (quantized dimension {axis})")
        shape = [1] * values.ndim
        shape[axis] = -1
        real = values.astype(np.float64) * np.broadcast_to(q[0], step.shape).reshape(shape)
        codes = np.round(real / step.reshape(shape))
        err = np.abs(codes * step.reshape(shape) - real)
        if np.any(np.abs(codes) > 127) or np.any(err > 0.501 * np.broadcast_to(q[0], step.shape).reshape(shape)):
            raise ValueError(f"quantized kernel {layer!r}: the converted filter is not on the QKeras grid")
        # Store k * m with scale step / m (1 <= m <= 127 / max|k| per channel): still exact integers, and the bias,
        # whose int32 unit must be input_scale * filter_scale, gets an m times finer grid. With m = 1 the bias
        # rounding moved int4 ResNet-8 pre-activations by up to 4e-4, enough to flip 0.06% of the first grid's bins;
        # among the allowed m the one whose unit holds the bias most exactly is taken.
        reduce_axes = tuple(a for a in range(values.ndim) if a != axis)
        k_max = np.maximum(np.abs(codes).max(axis=reduce_axes), 1.0)
        mult = np.floor(127.0 / k_max)
        bias_index = int(op.inputs[2]) if len(op.inputs) > 2 else -1
        in_q = _qparams(sub.tensors[op.inputs[0]])
        if bias_index in real_bias and in_q is not None:
            candidates = np.arange(1, 128, dtype=np.float64)[:, None]
            unit = float(np.float32(in_q[0][0])) * step[None, :] / candidates
            units = real_bias[bias_index][None, :] / unit
            err = np.abs(units - np.round(units)) * unit
            err[candidates[:, 0][:, None] > mult[None, :]] = np.inf
            # the largest m among those within 1% of the smallest error
            ok = err <= err.min(axis=0, keepdims=True) * 1.01 + 1e-15
            mult = np.max(np.where(ok, candidates, 0.0), axis=0)
        codes = codes * mult.reshape(shape)
        step = step / mult
        model.buffers[ft.buffer].data = np.frombuffer(codes.astype(np.int8).tobytes(), np.uint8)
        ft.quantization.scale = step.astype(np.float32)
        ft.quantization.zeroPoint = np.zeros(step.size, np.int64)
        ft.quantization.min = None
        ft.quantization.max = None
        changed_ops.add(ops[0])
        applied_kernel[layer] = tensor_name(ft)

    for i in sorted(changed_ops):
        op = sub.operators[i]
        if op_code_name(model, op.opcodeIndex) not in _WEIGHT_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        bias_index = int(op.inputs[2])
        if bias_index not in real_bias:
            continue
        in_q, w_q = _qparams(sub.tensors[op.inputs[0]]), _qparams(sub.tensors[op.inputs[1]])
        new_scale = np.float64(np.float32(in_q[0][0])) * w_q[0].astype(np.float32).astype(np.float64)
        codes = np.clip(np.round(real_bias[bias_index] / new_scale), -2**31, 2**31 - 1).astype(np.int32)
        bias_t = sub.tensors[bias_index]
        bias_t.quantization.scale = new_scale.astype(np.float32)
        bias_t.quantization.zeroPoint = np.zeros(new_scale.size, np.int64)
        model.buffers[bias_t.buffer].data = np.frombuffer(codes.tobytes(), np.uint8)
    return write_model(model), applied_act, applied_kernel


def _weight_op(model: Any, sub: Any, layer: str) -> int:
    """Index of the one weight op of Keras layer ``layer``: ``<layer>/`` names its output, filter or bias tensor (the
    model's final output tensor is renamed by the converter, so the output alone is not enough)."""
    import re

    pattern = re.compile(rf"(^|[/;]){re.escape(layer)}/")
    ops = [i for i, op in enumerate(sub.operators) if op_code_name(model, op.opcodeIndex) in _WEIGHT_OPS
           and any(pattern.search(tensor_name(sub.tensors[t]))
                   for t in [op.outputs[0], *[t for t in op.inputs[1:] if t >= 0]])]
    if len(ops) != 1:
        raise ValueError(f"layer {layer!r}: found {len(ops)} weight ops named '{layer}/' in the file")
    return ops[0]


def _real_range(model: Any, sub: Any, t: int, producers: dict) -> tuple[float, float]:
    """Values an int8 tensor can hold: its int8 range, cut at 0 when the producing op has a fused ReLU."""
    scale, zp = _qparams(sub.tensors[t])
    lo, hi = (-128 - float(zp[0])) * float(scale[0]), (127 - float(zp[0])) * float(scale[0])
    op = sub.operators[producers[t]] if t in producers else None
    act = getattr(getattr(op, "builtinOptions", None), "fusedActivationFunction", 0) if op is not None else 0
    if act in (1, 2, 3):  # RELU, RELU_N1_TO_1, RELU6
        lo = max(lo, -1.0 if act == 2 else 0.0)
    return lo, hi


def _tighten_add_inputs(model: Any, sub: Any, grids: dict, producers: dict, consumers: dict, ranges: dict) -> None:
    """Finer int8 scales for the convolution outputs that enter an ADD whose output is a QKeras activation grid.

    QKeras computes ``relu_q(a + b)`` with ``a`` and ``b`` in float; the int8 file stores ``a`` and ``b`` with
    calibrated scales (about 0.05-0.1 in ResNet-8) before adding, and their rounding moves the sum across a
    boundary of the 0.25-step int4 grid in a few % of the elements. Two remedies, both exact in real arithmetic:

    * the ADD output saturates outside ``[lo_o, hi_o]`` (fused ReLU, int8 range), so ``a`` only matters inside
      ``[lo_o - max b - s_o, hi_o - min b + s_o]``: clipping it there changes no output, and the same 256 codes
      then cover a narrower range;
    * when ``b`` is itself on the output grid (an identity shortcut from the same activation quantizer),
      ``round((a + b) / s_o) = round(a / s_o) + b / s_o``: giving ``a`` the scale ``s_o`` makes the convolution's
      requantization do QKeras' rounding and the ADD exact.

    ``ranges`` (``{weight layer name: (lo, hi)}``) replaces the calibrated range of a weight op's output before the
    exact narrowing. A tensor is changed only when an un-activated weight op produces it and this ADD is its only
    consumer.
    """
    import re

    fb = schema()

    def value_range(t: int) -> tuple[float, float]:
        if t in producers:
            for layer, (lo, hi) in ranges.items():
                if re.search(rf"(^|[/;]){re.escape(layer)}/", tensor_name(sub.tensors[t])):
                    return float(lo), float(hi)
        return _real_range(model, sub, t, producers)

    for i, op in enumerate(sub.operators):
        out = int(op.outputs[0])
        if op_code_name(model, op.opcodeIndex) != "ADD" or out not in grids or len(op.inputs) != 2:
            continue
        s_o = grids[out][0]
        lo_o, hi_o = _real_range(model, sub, out, producers)
        if getattr(op.builtinOptions, "fusedActivationFunction", 0) in (1, 3):
            lo_o = max(lo_o, 0.0)
        inputs = [int(t) for t in op.inputs]
        for k, t in enumerate(inputs):
            other = inputs[1 - k]
            producer = sub.operators[producers[t]] if t in producers else None
            if (producer is None or t in grids or t in [int(o) for o in sub.outputs] or consumers.get(t) != [i]
                    or sub.tensors[t].type != fb.TensorType.INT8
                    or op_code_name(model, producer.opcodeIndex) not in _WEIGHT_OPS
                    or getattr(producer.builtinOptions, "fusedActivationFunction", 0) != 0):
                continue
            lo_t, hi_t = value_range(t)
            lo_b, hi_b = value_range(other)
            lo = min(max(lo_t, lo_o - hi_b - s_o), 0.0)
            hi = max(min(hi_t, hi_o - lo_b + s_o), 0.0)
            if other in grids and np.isclose(grids[other][0], s_o, rtol=1e-6):
                scale = s_o
                zp = int(np.clip(np.round(-128 - lo / s_o), -128, 127))
            else:
                if hi - lo >= hi_t - lo_t and value_range(t) == _real_range(model, sub, t, producers):
                    continue
                scale = (hi - lo) / 255.0
                zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
            q = sub.tensors[t].quantization
            q.scale = np.asarray([scale], np.float32)
            q.zeroPoint = np.asarray([zp], np.int64)
            q.min = None
            q.max = None


def patch_activation_grids(data: bytes, grids: dict) -> tuple[bytes, dict]:
    """Only the activation part of :func:`patch_exact_grids`."""
    out, applied, _ = patch_exact_grids(data, grids, None)
    return out, applied
