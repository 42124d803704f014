# The project's commands. `make test` and `make train` work on a fresh clone.
PY ?= python
STAMP := .installed.stamp
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.c csrc/*.h) microtensor/_backend/build_kernels.py

.PHONY: install test train sanitize bench lint graphviz clean

$(STAMP): $(SOURCES)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP) graphviz

graphviz:  ## the `dot` program for rendering graphs; best effort, never fatal
	@command -v dot >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) \
		|| echo "graphviz not installed: graphs are written as DOT source only"; }

test: install
	$(PY) -m pytest tests

train: install
	$(PY) -m transformer.train --out runs/seed
	$(PY) -m transformer.report runs/seed

bench: install
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-columns=median,iqr,ops

lint:
	ruff check .

clean:
	rm -rf build *.egg-info $(STAMP) microtensor/_backend/_kernels*.so
