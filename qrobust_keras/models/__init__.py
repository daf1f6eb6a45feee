"""Reference models (MLCommons Tiny ResNet-8 and DS-CNN) built from a quantization policy, and their I/O."""

from qrobust_keras.models.heads import ends_in_softmax, logits_model
from qrobust_keras.models.io import load_model

__all__ = ["ends_in_softmax", "logits_model", "load_model"]
