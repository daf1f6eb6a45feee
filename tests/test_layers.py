"""The package's import layers (docs/architecture.md, "What may import what") hold: every ``qrobust_keras`` import
of every module, lazy imports inside functions included, goes to a package its row allows."""

import ast
import pathlib

import qrobust_keras

ROOT = pathlib.Path(qrobust_keras.__file__).parent
_BASE = {"_keras", "_checks", "_files"}
# docs/architecture.md's table; private helpers (_replicas, _version, ...) count with the base modules
ALLOWED = {
    "quantization": set(), "data": set(),
    "models": {"quantization"},
    "regularizers": {"models", "quantization", "training"},
    "training": {"models", "quantization", "regularizers"},
    "attacks": {"models", "quantization"},
    "evaluation": {"attacks", "models", "quantization"},
    "defenses": {"models", "quantization", "attacks", "evaluation"},
    "export": {"models", "quantization"},
    "recipes": {"data", "models", "quantization", "regularizers", "training", "evaluation"},
    "zoo": {"data", "models", "quantization", "evaluation", "export", "recipes"},
}


def _imported_packages(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n.split(".")[1] for n in names if n.startswith("qrobust_keras.") and n.count(".") >= 1}


def test_every_package_imports_only_what_its_layer_allows():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for imported in _imported_packages(path) - allowed - {package}:
                if imported.startswith("_"):
                    continue  # the private base modules serve every layer
                wrong.append(f"{path.relative_to(ROOT)} imports qrobust_keras.{imported}")
    assert not wrong, "imports against docs/architecture.md's layers:\n" + "\n".join(wrong)
