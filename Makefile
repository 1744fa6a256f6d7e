# Two entry points for a fresh clone (each creates .venv and installs what it needs):
#   make demo   run the main job on its default config (configs/demo.py)
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= /tmp/mmjax_demo
PYTEST_ARGS ?=
# The tested versions; pyproject.toml only states compatible ranges.
CONSTRAINTS ?= constraints.txt

$(VENV)/.installed-base: pyproject.toml $(CONSTRAINTS)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(CONSTRAINTS) $(VENV)/.installed-base
	$(VENV)/bin/pip install -q -c $(CONSTRAINTS) -e '.[test]'
	touch $@

.PHONY: demo test install
install: $(VENV)/.installed-test

demo: $(VENV)/.installed-base
	$(VENV)/bin/python -m mmjax.main --config configs/demo.py --workdir $(WORKDIR)

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS) tests
