# Two entry points for a fresh clone (each creates .venv and installs what it needs):
#   make demo   run the main job on its default config (configs/demo.py)
#   make test   run the test suite (what CI runs)
#   make test-fast  the edit-loop suite: the tests not marked slow
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

# test-fast keeps compiled XLA programs between runs here (keyed by the program itself, so an
# edit recompiles only what it changed; delete the folder to reclaim the space).
TEST_XLA_CACHE ?= .pytest_cache/xla

.PHONY: demo test test-fast install
install: $(VENV)/.installed-test

demo: $(VENV)/.installed-base
	$(VENV)/bin/python -m mmjax.main --config configs/demo.py --workdir $(WORKDIR)

test: $(VENV)/.installed-test
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS) tests

# Everything but the tests marked @pytest.mark.slow (CLI jobs, multi-process and multi-device
# runs, benchmark scripts): `make test` still runs them.
test-fast: $(VENV)/.installed-test
	JAX_COMPILATION_CACHE_DIR=$(abspath $(TEST_XLA_CACHE)) JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS) tests
