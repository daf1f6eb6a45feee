"""Jacobian regularization: the Keras callback, the penalty for custom loops, and Jacobian norms for reports."""

from qrobust_keras.regularizers.jacobian import (
    JacobianRegularization,
    jacobian_norm,
    jacobian_penalty,
    resolve_layers,
)

__all__ = ["JacobianRegularization", "jacobian_norm", "jacobian_penalty", "resolve_layers"]
