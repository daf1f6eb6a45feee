"""Attacks run against the exported int8 file itself (qrobust_keras/export/runner.py as the predict function)."""

import importlib

import numpy as np

import qrobust_keras as qrk
from qrobust_keras.export import TFLiteModel


def test_square_attack_against_the_int8_file(exported_int4, cifar_small):
    from qrobust_keras.attacks.square import square

    path, _ = exported_int4
    (_, _), (x_test, y_test) = cifar_small
    tfl = TFLiteModel(path)
    clean = tfl.predict(x_test[:200]).argmax(1) == y_test[:200]
    x, y = x_test[:200][clean][:24], y_test[:200][clean][:24]
    eps = 8 / 255
    x_adv, info = square(tfl, x, y, eps=eps, queries=100, seed=0, verbose=0, return_info=True)
    assert np.abs(x_adv.astype(np.float64) - x).max() <= eps + 1e-7
    # the attack's own verdict is the file's verdict on the returned points
    fooled = tfl.predict(x_adv).argmax(1) != y
    np.testing.assert_array_equal(fooled, info.success)
    assert fooled.mean() >= 0.25  # a briefly trained model is not robust: many flips within 100 queries
    assert info.queries.max() <= 100
    # L-inf Square only uses x +- eps (clipped): with x on the 1/255 grid and eps = 8/255 its points are already on
    # the file's input grid, so projecting them changes nothing the device sees
    grid = tfl.input_grid
    projected = grid.project(x, x_adv, eps)
    np.testing.assert_array_equal(grid.quantize(projected), grid.quantize(x_adv))


def test_transfer_attack_from_the_qkeras_model_to_the_file(exported_int4, resnet8_int4, cifar_small):
    path, _ = exported_int4
    (_, _), (x_test, y_test) = cifar_small
    tfl = TFLiteModel(path)
    x, y = x_test[:64], y_test[:64]
    eps = 8 / 255
    try:
        transfer = importlib.import_module("qrobust_keras.attacks.transfer").transfer
        x_adv = transfer(resnet8_int4, x, y, eps=eps, attack="pgd", verbose=0)
        x_adv = x_adv[0] if isinstance(x_adv, tuple) else x_adv
    except ModuleNotFoundError:
        # transfer = a white-box attack on the source model, evaluated on the target (Papernot et al. 2016)
        x_adv = qrk.attacks.pgd(resnet8_int4, x, y, eps=eps, steps=10, verbose=0)
    x_adv = np.asarray(x_adv)
    assert np.abs(x_adv.astype(np.float64) - x).max() <= eps + 1e-6
    acc_clean = np.mean(tfl.predict(x).argmax(1) == y)
    acc_adv = np.mean(tfl.predict(x_adv).argmax(1) == y)
    acc_source = np.mean(resnet8_int4.predict(x_adv, verbose=0).argmax(1) == y)
    assert acc_source <= 0.1          # white-box on the source model
    assert acc_adv < acc_clean - 0.1  # and the examples transfer to the int8 file
