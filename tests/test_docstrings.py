"""Every docstring example of every ``qrobust_keras`` module runs as written (doctest, ELLIPSIS, NORMALIZE_WHITESPACE).

Each module runs with its current directory set to a scratch checkout, ``tmp_path/checkout``, so files an example
writes never land in the repository. Examples that read the project's real data name it as seen from a checkout,
``../shared/data/...``; for those modules ``tmp_path/shared/data`` links to the real folder (the ``shared_data``
fixture: ``../shared/data`` beside the repository, or ``$QROBUST_SHARED_DATA``).
"""

import doctest
import importlib
import pkgutil

import pytest

import qrobust_keras

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
SHARED_DATA = "../shared/data"
MODULES = sorted(m.name for m in pkgutil.walk_packages(qrobust_keras.__path__, "qrobust_keras."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch, request):
    module = importlib.import_module(name)
    examples = [e for t in doctest.DocTestFinder().find(module) for e in t.examples]
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    if any(SHARED_DATA in e.source for e in examples):
        (tmp_path / "shared").mkdir()
        (tmp_path / "shared" / "data").symlink_to(request.getfixturevalue("shared_data"), target_is_directory=True)
    monkeypatch.chdir(checkout)
    result = doctest.testmod(module, optionflags=OPTIONS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see stdout)"
