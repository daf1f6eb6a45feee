"""fgsm against cleverhans' fast_gradient_method on a small CIFAR-10 model (the reference oracle)."""

import numpy as np
import pytest
from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

from qrobust_keras.attacks import fgsm
from qrobust_keras.models import logits_model


def _accuracy(model, x, y):
    return float((model.predict(x, verbose=0, batch_size=256).argmax(1) == y).mean())


@pytest.mark.parametrize("norm,eps", [("inf", 0.5 / 255), ("2", 0.05)])
def test_fgsm_matches_cleverhans(small_model, attack_set, norm, eps):
    x, y = attack_set
    ours = fgsm(small_model, x, y, eps=eps, norm=norm, verbose=0)
    ref = fast_gradient_method(logits_model(small_model), x, eps, np.inf if norm == "inf" else 2, clip_min=0.0,
                               clip_max=1.0, y=y).numpy()
    # Same single step on the same logits: the images agree up to float rounding, so the accuracy is identical
    # up to at most 1 sample of the 200 (tolerance 0.5 point).
    assert np.abs(ours - ref).max() < 1e-5
    assert abs(_accuracy(small_model, ours, y) - _accuracy(small_model, ref, y)) <= 0.005
    assert _accuracy(small_model, ours, y) < 0.8  # the attack does something on correctly classified images


def test_fgsm_rejects_more_than_one_step(small_model, attack_set):
    x, y = attack_set
    with pytest.raises(ValueError, match="steps"):
        fgsm(small_model, x[:2], y[:2], eps=0.01, steps=3, verbose=0)
