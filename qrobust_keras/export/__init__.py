"""int8 TFLite export, the TFLiteModel runner for deployed files, TFLite Micro footprint, C arrays."""

from qrobust_keras.export import flatbuffer, grids
from qrobust_keras.export.clone import ClonePlan, plain_clone
from qrobust_keras.export.quantized_values import UnsupportedLayerError, quantized_weights
from qrobust_keras.export.runner import RUNTIMES, InputGrid, TFLiteFormatError, TFLiteModel, load_tflite_bytes
from qrobust_keras.export.tflite import ExportError, ExportInfo, convert, export_tflite, write_atomic
from qrobust_keras.export.c_array import to_c_array
from qrobust_keras.export.tflm import MLCOMMONS_RESNET8_INT8, TFLMFootprint, tflm_footprint
from qrobust_keras.export.bundle import export_files
from qrobust_keras.export.fidelity import RUNTIME_CHOICES, compare_runtimes

__all__ = ["export_tflite", "ExportInfo", "ExportError", "convert", "write_atomic", "plain_clone", "ClonePlan",
           "quantized_weights", "UnsupportedLayerError", "TFLiteModel", "InputGrid", "TFLiteFormatError",
           "load_tflite_bytes", "RUNTIMES", "flatbuffer", "grids", "to_c_array", "tflm_footprint", "TFLMFootprint",
           "MLCOMMONS_RESNET8_INT8", "export_files", "compare_runtimes", "RUNTIME_CHOICES"]
