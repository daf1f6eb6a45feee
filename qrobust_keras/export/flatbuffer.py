"""Reading and writing TFLite flatbuffers: operator lists, tensor data and types, the TFLite Micro int8 whitelist.

Uses the generated flatbuffer schema that ships with LiteRT (``ai_edge_litert.schema_py_generated``; the copies in
``tflite-micro`` and TensorFlow serve as fall-backs), so no interpreter is needed to inspect a file: a file with
Flex or custom ops can still be read and rejected with a clear message.

Example:

>>> from qrobust_keras.export import flatbuffer
>>> model = flatbuffer.read_model(open("model.tflite", "rb").read())   # doctest: +SKIP
>>> flatbuffer.op_counts(model)                                       # doctest: +SKIP
{'CONV_2D': 9, 'ADD': 3, 'AVERAGE_POOL_2D': 1, 'RESHAPE': 1, 'FULLY_CONNECTED': 1, 'SOFTMAX': 1}
"""

from __future__ import annotations

import collections
import importlib
from typing import Any

import numpy as np

__all__ = ["schema", "read_model", "write_model", "op_names", "op_counts", "op_code_name", "tensor_name",
           "tensor_type_name", "check_int8_ops", "TFLM_INT8_OPS", "tensor_values"]

# int8 builtin kernels of TensorFlow Lite Micro (tensorflow/lite/micro/kernels, micro_mutable_op_resolver.h).
TFLM_INT8_OPS = frozenset({
    "ADD", "SUB", "MUL", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "AVERAGE_POOL_2D",
    "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SOFTMAX", "LOG_SOFTMAX", "MEAN", "SUM", "REDUCE_MAX", "RELU",
    "RELU6", "LEAKY_RELU", "PRELU", "HARD_SWISH", "LOGISTIC", "TANH", "QUANTIZE", "DEQUANTIZE", "PAD", "PADV2",
    "CONCATENATION", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "TRANSPOSE", "MAXIMUM", "MINIMUM",
    "ARG_MAX", "ARG_MIN", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE",
    "RESIZE_NEAREST_NEIGHBOR", "RESIZE_BILINEAR", "L2_NORMALIZATION", "SHAPE", "GATHER", "BROADCAST_TO",
})

_SCHEMA_MODULES = ("ai_edge_litert.schema_py_generated",
                   "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
                   "tensorflow.lite.python.schema_py_generated")
_schema = None


def schema():
    """The generated TFLite flatbuffer schema module (first importable of LiteRT, tflite-micro, TensorFlow)."""
    global _schema
    if _schema is None:
        errors = []
        for name in _SCHEMA_MODULES:
            if name.startswith("tensorflow"):
                import qrobust_keras._keras  # noqa: F401  (TensorFlow only ever loads after TF_USE_LEGACY_KERAS)
            try:
                _schema = importlib.import_module(name)
                break
            except ImportError as exc:
                errors.append(f"{name}: {exc}")
        else:
            raise ImportError("no TFLite flatbuffer schema found; install ai-edge-litert (pip install "
                              f"'qrobust-keras[tflite]'). Tried: {errors}")
    return _schema


def read_model(data: bytes) -> Any:
    """Parse flatbuffer bytes into the schema's mutable object tree (``ModelT``)."""
    fb = schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(bytearray(data), 0))
    if not model.subgraphs:
        raise ValueError("the flatbuffer has no subgraph")
    return model


def write_model(model: Any) -> bytes:
    """Serialize a ``ModelT`` back to flatbuffer bytes with the ``TFL3`` identifier."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


_NAMES: dict[int, str] = {}
_TYPE_NAMES: dict[int, str] = {}


def _builtin_name(code: int) -> str:
    if not _NAMES:
        ops = schema().BuiltinOperator
        _NAMES.update({v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)})
    return _NAMES.get(code, f"BUILTIN_{code}")


def tensor_type_name(code: int) -> str:
    """``"INT8"``, ``"FLOAT32"``, ... for a schema TensorType code."""
    if not _TYPE_NAMES:
        types = schema().TensorType
        _TYPE_NAMES.update({v: k for k, v in vars(types).items() if not k.startswith("_") and isinstance(v, int)})
    return _TYPE_NAMES.get(code, f"TYPE_{code}")


def op_code_name(model: Any, opcode_index: int) -> str:
    """The op name of operator code ``opcode_index`` (``CUSTOM:<name>`` and ``FLEX:<tf op>`` for those)."""
    code = model.operatorCodes[opcode_index]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    name = _builtin_name(builtin)
    if name == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
        return f"CUSTOM:{custom}" if not custom.startswith("Flex") else f"FLEX:{custom[4:]}"
    return name


def op_names(model: Any) -> list[tuple[int, int, str]]:
    """``(subgraph, operator index, op name)`` for every operator; custom ops are ``CUSTOM:<name>`` and Flex ops
    ``FLEX:<tf op>``."""
    out = []
    for s, sub in enumerate(model.subgraphs):
        for i, op in enumerate(sub.operators or []):
            out.append((s, i, op_code_name(model, op.opcodeIndex)))
    return out


def op_counts(model: Any) -> dict[str, int]:
    """``{op name: count}`` over all subgraphs, in order of first appearance."""
    return dict(collections.Counter(name for _, _, name in op_names(model)))


def tensor_name(tensor: Any) -> str:
    """The tensor's name as text."""
    name = tensor.name
    return name.decode() if isinstance(name, bytes) else str(name)


def check_int8_ops(model: Any, allowed: frozenset = TFLM_INT8_OPS) -> list[str]:
    """Reasons why the graph is not an integer-only TFLite Micro graph (empty list when it is).

    Checks: every op is a builtin in ``allowed`` (no Flex, no custom ops), and no op reads or writes a float tensor
    (which would be a float kernel inside the graph); int32 is accepted for biases and shape operands only.
    """
    problems = []
    fb_types = schema().TensorType
    for s, sub in enumerate(model.subgraphs):
        for i, op in enumerate(sub.operators or []):
            name = op_code_name(model, op.opcodeIndex)
            if name not in allowed:
                problems.append(f"op {i} {name} is not an int8 builtin of TFLite Micro")
                continue
            for role, indices in (("input", op.inputs), ("output", op.outputs)):
                for t in (indices if indices is not None else []):
                    if t < 0:
                        continue
                    tensor = sub.tensors[t]
                    if tensor.type in (fb_types.FLOAT32, fb_types.FLOAT16, fb_types.FLOAT64):
                        problems.append(f"op {i} {name} has the float {role} tensor {tensor_name(tensor)!r} "
                                        f"({tensor_type_name(tensor.type)})")
    return problems


def tensor_values(model: Any, tensor_index: int, subgraph: int = 0) -> np.ndarray | None:
    """The constant data of a tensor as a numpy array of its type and shape (None for activations)."""
    sub = model.subgraphs[subgraph]
    tensor = sub.tensors[tensor_index]
    buf = model.buffers[tensor.buffer]
    data = getattr(buf, "data", None)
    if data is None or len(data) == 0:
        return None
    dtype = {"INT8": np.int8, "INT32": np.int32, "FLOAT32": np.float32, "UINT8": np.uint8, "INT16": np.int16,
             "INT64": np.int64, "FLOAT16": np.float16}[tensor_type_name(tensor.type)]
    shape = [int(d) for d in (tensor.shape if tensor.shape is not None else [])]
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(shape)
