"""The ensemble tests reuse the diagnostics test models of tests/evaluation/_diag_fixtures.py."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "evaluation"))
