# Two-command quick start: `make demo` and `make test` (each creates .venv on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: venv install install-demo install-test demo test wheel leaderboard clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(PY)

install: $(PY)
	$(PY) -m pip install --quiet -e .

# everything the demo uses: the base install plus LiteRT and the TFLite Micro host interpreter
install-demo: $(PY)
	$(PY) -m pip install --quiet -e ".[tflite]"

install-test: $(PY)
	$(PY) -m pip install --quiet -e ".[all,test]"

demo: install-demo
	$(VENV)/bin/qrobust demo $(DEMO_ARGS)

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

wheel: $(PY)
	rm -rf dist
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info demo_report
