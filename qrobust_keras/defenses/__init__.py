"""Defenses evaluated honestly: the mixed-precision ensemble (a differentiable Keras model, attacked adaptively)."""

from qrobust_keras.defenses.ensemble import (COMBINE_MODES, EnsembleCombine, EnsembleRobustness,
                                             MixedPrecisionEnsemble, evaluate_ensemble)

__all__ = ["MixedPrecisionEnsemble", "EnsembleCombine", "COMBINE_MODES", "EnsembleRobustness", "evaluate_ensemble"]
