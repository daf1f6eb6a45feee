"""Adversarial attacks: plain functions ``attack(model, x, y, eps, ...) -> x_adv`` with shared argument names.

White-box (Keras models, compiled loops): fgsm, bim, pgd, mim, cw_l2, apgd. Black-box (any predict function):
square, spsa. Attacks by name with default
parameters per dataset scale: :mod:`qrobust_keras.attacks.registry`.
"""

from qrobust_keras.attacks._common import AttackInfo, PredictFn, as_predict_fn, enforce_constraints, perturbation_norms
from qrobust_keras.attacks.apgd import apgd
from qrobust_keras.attacks.cw import cw_l2
from qrobust_keras.attacks.fgsm import fgsm
from qrobust_keras.attacks.mim import mim
from qrobust_keras.attacks.pgd import bim, pgd
from qrobust_keras.attacks.spsa import spsa
from qrobust_keras.attacks.square import square
from qrobust_keras.attacks.registry import attack_kwargs, available_attacks, get_attack, list_attacks, run_attack

__all__ = ["AttackInfo", "PredictFn", "as_predict_fn", "enforce_constraints", "perturbation_norms", "fgsm", "bim",
           "pgd", "mim", "cw_l2", "apgd", "square", "spsa", "attack_kwargs", "available_attacks", "get_attack", "list_attacks",
           "run_attack"]
