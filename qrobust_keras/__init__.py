"""qrobust-keras: adversarially robust tiny quantized Keras models for microcontrollers.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow loads (QKeras needs Keras 2), and raises an
ImportError with instructions when TensorFlow was already imported with Keras 3 active.

Example:

>>> import qrobust_keras as qrk
>>> policy = qrk.quantization.QuantPolicy(kernel="stochastic_ternary", activation="int4")
>>> model = qrk.models.resnet8(num_classes=10, policy=policy)
>>> model.count_params()
78666
"""

from qrobust_keras import _keras  # noqa: F401  (must run before anything imports TensorFlow)
from qrobust_keras import quantization, models, data, regularizers, training, attacks, evaluation, defenses, export
from qrobust_keras import recipes
from qrobust_keras.models.io import load_model

__version__ = "0.1.0"

_LAZY = {
    "JacobianRegularization": ("qrobust_keras.regularizers", "JacobianRegularization"),
    "jacobian_norm": ("qrobust_keras.regularizers", "jacobian_norm"),
    "AdversarialTraining": ("qrobust_keras.training", "AdversarialTraining"),
    "TRADES": ("qrobust_keras.training", "TRADES"),
}


def __getattr__(name):
    # Callbacks are resolved lazily so `import qrobust_keras` stays cheap and free of import cycles.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'qrobust_keras' has no attribute {name!r}")


__all__ = [
    "quantization", "models", "data", "regularizers", "training", "recipes", "attacks", "evaluation", "defenses",
    "export",
    "load_model", "JacobianRegularization", "jacobian_norm", "AdversarialTraining", "TRADES", "__version__",
]
