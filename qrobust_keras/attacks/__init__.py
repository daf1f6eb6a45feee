"""Adversarial attacks: plain functions ``attack(model, x, y, eps, ...) -> x_adv`` with shared argument names.

White-box (Keras models, whole loops compiled per batch): fgsm, bim, pgd (``pgd-cw`` by name: on the C&W margin), mim,
cw_l2, apgd.
Black-box (any predict function; queries counted): square, spsa, and hopskipjump, boundary, zoo (via ART, optional
extra ``blackbox``). transfer crafts on a surrogate and evaluates on a target. Attacks by name with default
parameters per dataset scale: :mod:`qrobust_keras.attacks.registry`.

Example:

>>> import qrobust_keras as qrk
>>> qrk.attacks.list_attacks("white")
['fgsm', 'bim', 'pgd', 'pgd-cw', 'mim', 'cw_l2', 'apgd-ce', 'apgd-dlr']
"""

from qrobust_keras.attacks._common import AttackInfo, PredictFn, as_predict_fn, enforce_constraints, perturbation_norms
from qrobust_keras.attacks.apgd import apgd
from qrobust_keras.attacks.art_blackbox import boundary, hopskipjump, zoo
from qrobust_keras.attacks.cw import cw_l2
from qrobust_keras.attacks.fgsm import fgsm
from qrobust_keras.attacks.mim import mim
from qrobust_keras.attacks.pgd import bim, pgd
from qrobust_keras.attacks.registry import attack_kwargs, available_attacks, get_attack, list_attacks, run_attack
from qrobust_keras.attacks.spsa import spsa
from qrobust_keras.attacks.square import square
from qrobust_keras.attacks.transfer import TransferInfo, transfer

__all__ = [
    "AttackInfo", "PredictFn", "as_predict_fn", "enforce_constraints", "perturbation_norms",
    "fgsm", "bim", "pgd", "mim", "cw_l2", "apgd",
    "square", "spsa", "hopskipjump", "boundary", "zoo", "transfer", "TransferInfo",
    "attack_kwargs", "available_attacks", "get_attack", "list_attacks", "run_attack",
]
