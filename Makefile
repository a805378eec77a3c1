# Two commands: `make demo` and `make test`; each does the set-up it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test test-all bench docs clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@command -v gfortran >/dev/null 2>&1 || { \
	  echo "gfortran missing: installing it with apt"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq gfortran; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/bifnet run continuation_runs/demo.toml --out results/demo --force

# two pytest workers: most tests are single-threaded (456 s serially, 292 s on 2 workers, 2026-12-07)
test: install
	$(PY) -m pytest -q -m "not slow" -n 2

test-all: install
	$(PY) -m pytest -q -n 2

bench: install
	$(PY) -m pip install -q -e '.[bench]'
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

docs: install
	$(PY) -m pip install -q -e '.[docs]'
	$(VENV)/bin/sphinx-build -W -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) results docs/_build *.egg-info
