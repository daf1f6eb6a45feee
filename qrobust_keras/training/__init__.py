"""Training callbacks that extend model.fit (adversarial training, TRADES, Jacobian regularization, the shared
train-step hooks,) and BatchNorm re-estimation for stochastic quantized models."""

from qrobust_keras.training.step import (StepContext, TrainStepHook, active_hooks, create_fit_variables,
                                         restore_train_step)
from qrobust_keras.training.adversarial import AdversarialTraining, batchnorm_statistics_frozen
from qrobust_keras.training.trades import TRADES, kl_divergence_from_logits
from qrobust_keras.training.jacobian import JacobianRegularization
from qrobust_keras.training.bn_recalibration import recalibrate_batchnorm

__all__ = ["AdversarialTraining", "TRADES", "JacobianRegularization", "kl_divergence_from_logits",
           "batchnorm_statistics_frozen", "recalibrate_batchnorm", "TrainStepHook", "StepContext",
           "active_hooks", "restore_train_step", "create_fit_variables"]
