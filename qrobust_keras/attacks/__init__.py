"""Adversarial attacks: plain functions ``attack(model, x, y, eps, ...) -> x_adv`` with shared argument names.

White-box (Keras models, whole loops compiled per batch): fgsm, bim, pgd (``pgd-cw`` by name: on the C&W margin), mim,
cw_l2, apgd, and AutoAttack's targeted attacks apgd_t and fab_t (fab: the minimum-norm boundary attack).
Black-box (any predict function; queries counted): square, spsa, and hopskipjump, boundary, zoo (via ART, optional
extra ``blackbox``). transfer crafts on a surrogate and evaluates on a target. Attacks by name with default
parameters per dataset scale: :mod:`qrobust_keras.attacks.registry`.

The functions load on first use, so ``qrobust_keras.attacks.registry`` (the table of attack names) can be read
without importing TensorFlow (the ``qrobust`` command's argument parsing relies on that).

Example:

>>> import qrobust_keras as qrk
>>> qrk.attacks.list_attacks("white")
['fgsm', 'bim', 'pgd', 'pgd-cw', 'mim', 'cw_l2', 'apgd-ce', 'apgd-dlr', 'apgd-t', 'fab', 'fab-t']
"""

import importlib
import sys
import types

_EXPORTS = {
    "AttackInfo": "common", "PredictFn": "common", "as_predict_fn": "common", "enforce_constraints": "common",
    "perturbation_norms": "common",
    "apgd": "apgd", "apgd_t": "targeted", "fab": "fab", "fab_t": "targeted", "boundary": "art_blackbox", "hopskipjump": "art_blackbox", "zoo": "art_blackbox", "cw_l2": "cw",
    "fgsm": "fgsm", "mim": "mim", "bim": "pgd", "pgd": "pgd", "spsa": "spsa", "square": "square",
    "TransferInfo": "transfer", "transfer": "transfer",
    "attack_kwargs": "registry", "available_attacks": "registry", "get_attack": "registry", "list_attacks": "registry",
    "run_attack": "registry",
}


class _AttacksModule(types.ModuleType):
    """Resolves the exported names lazily. Several attack functions share their name with their module
    (``attacks.pgd`` the function, ``attacks/pgd.py`` the module); importing a submodule sets the package attribute
    to the module, so the function must win on every attribute read, not only on a missing one."""

    def __getattribute__(self, name):
        module = _EXPORTS.get(name)
        if module is not None:
            return getattr(importlib.import_module(f"{__name__}.{module}"), name)
        return super().__getattribute__(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(_EXPORTS))


sys.modules[__name__].__class__ = _AttacksModule

__all__ = [
    "AttackInfo", "PredictFn", "as_predict_fn", "enforce_constraints", "perturbation_norms",
    "fgsm", "bim", "pgd", "mim", "cw_l2", "apgd", "apgd_t", "fab", "fab_t",
    "square", "spsa", "hopskipjump", "boundary", "zoo", "transfer", "TransferInfo",
    "attack_kwargs", "available_attacks", "get_attack", "list_attacks", "run_attack",
]
