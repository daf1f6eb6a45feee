"""registry: names, aliases, the default table, overrides and dispatch."""

import numpy as np
import pytest

from qrobust_keras.attacks import registry


def test_names_aliases_and_kinds():
    assert registry.canonical_name("CW") == "cw_l2"
    assert registry.canonical_name("apgd") == "apgd-ce"
    white = set(registry.list_attacks("white"))
    assert white == {"fgsm", "bim", "pgd", "pgd-cw", "mim", "cw_l2", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t"}
    assert registry.canonical_name("cw_linf") == "pgd-cw"
    assert {"square", "spsa", "hopskipjump", "boundary", "zoo"} <= set(registry.list_attacks("black"))
    with pytest.raises(ValueError, match="unknown attack 'deepfool'.*pgd"):
        registry.get_attack("deepfool")


def test_default_table_and_overrides():
    eps = 8 / 255
    kw = registry.attack_kwargs("pgd", eps=eps, scale="image")
    assert kw["steps"] == 20 and kw["step_size"] == pytest.approx(eps / 4) and kw["rand_init"]
    assert registry.attack_kwargs("pgd", eps=eps, scale="quick")["steps"] == 10
    assert registry.attack_kwargs("apgd-dlr", eps=eps)["loss"] == "dlr"
    kw = registry.attack_kwargs("pgd", eps=eps, overrides={"steps": 50, "step_size": registry.Rel(0.1)})
    assert kw["steps"] == 50 and kw["step_size"] == pytest.approx(0.1 * eps)
    with pytest.raises(ValueError, match="fixes loss"):
        registry.attack_kwargs("apgd-dlr", eps=eps, overrides={"loss": "ce"})
    with pytest.raises(ValueError, match="scale"):
        registry.attack_kwargs("pgd", eps=eps, scale="huge")


def test_run_attack_dispatches_with_defaults(small_model, attack_set):
    from qrobust_keras.attacks import pgd

    x, y = attack_set
    a = registry.run_attack("pgd", small_model, x[:16], y[:16], 1 / 255, scale="quick", verbose=0)
    b = pgd(small_model, x[:16], y[:16], eps=1 / 255, steps=10, step_size=0.25 / 255, verbose=0)
    assert np.array_equal(a, b)
    c = registry.run_attack("pgd-cw", small_model, x[:16], y[:16], 1 / 255, scale="quick", verbose=0)
    d = pgd(small_model, x[:16], y[:16], eps=1 / 255, steps=10, step_size=0.25 / 255, loss="cw", verbose=0)
    assert np.array_equal(c, d)
    with pytest.raises(ValueError, match="supports norm 2"):
        registry.run_attack("cw_l2", small_model, x[:2], y[:2], 0.1, norm="inf")


@pytest.mark.parametrize("scale", registry.SCALES)
def test_every_default_is_an_argument_of_its_attack(scale):
    import inspect

    for name in registry.list_attacks():
        params = inspect.signature(registry.get_attack(name).load()).parameters
        shared = {"eps", "norm", "seed", "verbose", "return_info", "targeted", "clip_min", "clip_max"}
        kwargs = registry.attack_kwargs(name, eps=0.01, scale=scale)
        missing = (set(kwargs) | shared) - set(params)
        assert not missing, f"{name} ({scale}) does not accept {missing}"


def test_resolve_binds_the_variant_and_passes_callables_through():
    from qrobust_keras.attacks.apgd import apgd
    from qrobust_keras.attacks.pgd import pgd

    assert registry.resolve("PGD") == ("pgd", pgd)
    name, fn = registry.resolve("apgd_dlr")
    assert name == "apgd-dlr" and fn.func is apgd and fn.keywords == {"loss": "dlr"}

    def mine(model, x, y, eps, **kwargs):
        return x

    assert registry.resolve(mine) == ("mine", mine)
    with pytest.raises(ValueError, match=r"black_box must be one of \[.*'square'.*\].* got black_box='deepfool'"):
        registry.resolve("deepfool", argument="black_box")
    with pytest.raises(TypeError, match="attack must be an attack name"):
        registry.resolve(3)
