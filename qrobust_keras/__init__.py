"""qrobust-keras: adversarially robust tiny quantized Keras models for microcontrollers.

Importing this package sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow loads (QKeras needs Keras 2), and raises an
ImportError with instructions when TensorFlow was already imported with Keras 3 active. The subpackages load on
first use (``qrk.models``, ``qrk.attacks``, ...), so ``import qrobust_keras`` and ``qrobust --help`` stay fast and
import no TensorFlow until something needs it.

Example:

>>> import qrobust_keras as qrk
>>> policy = qrk.quantization.QuantPolicy(kernel="stochastic_ternary", activation="int4")
>>> model = qrk.models.resnet8(num_classes=10, policy=policy)
>>> model.count_params()
78666
"""

import importlib
import importlib.util
import os
import sys

if "tensorflow" not in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() not in (
        "1", "true", "yes"):
    # Must happen before the first `import tensorflow` anywhere in the process (the Keras-3 trap, see _keras).
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
if "tensorflow" in sys.modules:
    # TensorFlow is already loaded (so importing it costs nothing now): check for the Keras-3 trap at once.
    from qrobust_keras import _keras  # noqa: F401

__version__ = "0.1.0"

SUBPACKAGES = ("quantization", "models", "data", "regularizers", "training", "recipes", "attacks", "evaluation",
               "defenses", "export", "zoo")

_LAZY = {
    "load_model": ("qrobust_keras.models.io", "load_model"),
    "JacobianRegularization": ("qrobust_keras.regularizers", "JacobianRegularization"),
    "jacobian_norm": ("qrobust_keras.regularizers", "jacobian_norm"),
    "AdversarialTraining": ("qrobust_keras.training", "AdversarialTraining"),
    "TRADES": ("qrobust_keras.training", "TRADES"),
    "RobustValidation": ("qrobust_keras.evaluation", "RobustValidation"),
}


def __getattr__(name):
    # Subpackages and the callbacks load on first use: `import qrobust_keras` stays cheap and free of import cycles.
    if name in SUBPACKAGES:
        return importlib.import_module(f"qrobust_keras.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'qrobust_keras' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(SUBPACKAGES) | set(_LAZY))


def import_all() -> None:
    """Import every subpackage now (registers all custom Keras layers and quantizers, e.g. before loading a model)."""
    for name in SUBPACKAGES:
        if importlib.util.find_spec(f"qrobust_keras.{name}") is not None:
            importlib.import_module(f"qrobust_keras.{name}")


__all__ = [
    "quantization", "models", "data", "regularizers", "training", "recipes", "attacks", "evaluation", "defenses",
    "export", "load_model", "JacobianRegularization", "jacobian_norm", "AdversarialTraining", "TRADES",
    "RobustValidation", "import_all", "__version__",
]
