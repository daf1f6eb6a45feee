"""Attacks run against the exported int8 file itself (qrobust_keras/export/runner.py as the predict function)."""

import numpy as np

from qrobust_keras.export import TFLiteModel


def test_square_attack_against_the_int8_file(exported_int4, cifar_small):
    from qrobust_keras.attacks.square import square

    path, _ = exported_int4
    (_, _), (x_test, y_test) = cifar_small
    tfl = TFLiteModel(path)
    clean = tfl.predict(x_test[:200]).argmax(1) == y_test[:200]
    x, y = x_test[:200][clean][:48], y_test[:200][clean][:48]
    eps = 8 / 255
    x_adv, info = square(tfl, x, y, eps=eps, queries=300, seed=0, verbose=0, return_info=True)
    assert np.abs(x_adv.astype(np.float64) - x).max() <= eps + 1e-7
    # the attack's own verdict is the file's verdict on the returned points
    fooled = tfl.predict(x_adv).argmax(1) != y
    np.testing.assert_array_equal(fooled, info.success)
    # a briefly trained model is not robust: Square flips many decisions, far more than random corners of the
    # eps-box (measured on one CPU: 37.5% of 48 within 300 queries, 16.7% of 24 within 100; random corners 8.3%)
    corners = np.clip(x + np.random.default_rng(0).choice([-eps, eps], x.shape), 0, 1).astype(np.float32)
    assert fooled.mean() >= 0.25 and fooled.mean() > 2 * np.mean(tfl.predict(corners).argmax(1) != y)
    assert info.queries.max() <= 300
    # L-inf Square only uses x +- eps (clipped): with x on the 1/255 grid and eps = 8/255 its points are already on
    # the file's input grid, so projecting them changes nothing the device sees
    grid = tfl.input_grid
    projected = grid.project(x, x_adv, eps)
    np.testing.assert_array_equal(grid.quantize(projected), grid.quantize(x_adv))


def test_transfer_attack_from_the_qkeras_model_to_the_file(exported_int4, resnet8_int4, cifar_small):
    from qrobust_keras.attacks.transfer import transfer

    path, _ = exported_int4
    (_, _), (x_test, y_test) = cifar_small
    tfl = TFLiteModel(path)
    x, y = x_test[:64], y_test[:64]
    eps = 8 / 255
    x_adv, info = transfer(resnet8_int4, tfl, x, y, attack="pgd", eps=eps, attack_kwargs={"steps": 10}, verbose=0,
                           return_info=True)
    assert np.abs(x_adv.astype(np.float64) - x).max() <= eps + 1e-7
    # the transfer verdict is the file's own verdict on x_adv
    np.testing.assert_array_equal(info.success, tfl.predict(x_adv).argmax(1) != y)
    assert info.n_eligible >= 10
    assert info.source_success_rate >= 0.9   # white-box on the QKeras source model
    assert info.transfer_rate >= 0.5         # the examples carry over to the int8 file of the same model
    acc_clean = np.mean(tfl.predict(x).argmax(1) == y)
    acc_adv = np.mean(tfl.predict(x_adv).argmax(1) == y)
    assert acc_adv < acc_clean - 0.1
