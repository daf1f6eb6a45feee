"""Jacobian regularization: the penalty for custom loops and Jacobian norms for reports (the estimator math).

The ``model.fit`` callback lives in :mod:`qrobust_keras.training` (``training`` builds on this package, not the
reverse); ``from qrobust_keras.regularizers import JacobianRegularization`` still works and gives that class.
"""

from qrobust_keras.regularizers.jacobian import jacobian_norm, jacobian_penalty, resolve_layers


def __getattr__(name):
    # The callback is resolved lazily: importing it here at once would make regularizers import training.
    if name == "JacobianRegularization":
        from qrobust_keras.training.jacobian import JacobianRegularization

        return JacobianRegularization
    raise AttributeError(f"module 'qrobust_keras.regularizers' has no attribute {name!r}")


__all__ = ["JacobianRegularization", "jacobian_norm", "jacobian_penalty", "resolve_layers"]
