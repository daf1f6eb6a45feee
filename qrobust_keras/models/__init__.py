"""Reference models (MLCommons Tiny ResNet-8 and DS-CNN) built from a quantization policy, and their I/O."""

from qrobust_keras.models.ds_cnn import ds_cnn
from qrobust_keras.models.heads import ends_in_softmax, logits_model, logits_tensor
from qrobust_keras.models.io import ModelFileError, copy_weights_by_name, custom_objects, load_model
from qrobust_keras.models.mlcommons import load_mlcommons
from qrobust_keras.models.resnet import resnet8
from qrobust_keras.models.summary import LayerSummary, ModelSummary, summary

__all__ = ["resnet8", "ds_cnn", "load_mlcommons", "summary", "ModelSummary", "LayerSummary", "ends_in_softmax",
           "logits_model", "logits_tensor", "load_model", "ModelFileError", "custom_objects",
           "copy_weights_by_name"]
