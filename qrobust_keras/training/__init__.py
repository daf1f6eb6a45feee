"""Training callbacks that extend model.fit: adversarial training and the shared train-step hook mechanism."""

from qrobust_keras.training.step import StepContext, TrainStepHook, active_hooks, restore_train_step
from qrobust_keras.training.adversarial import AdversarialTraining

__all__ = ["AdversarialTraining", "TrainStepHook", "StepContext", "active_hooks", "restore_train_step"]
