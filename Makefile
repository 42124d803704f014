# The project's commands. `make test` and `make train` work on a fresh clone.
PY ?= python
STAMP := .installed.stamp
SOURCES := setup.py pyproject.toml $(wildcard csrc/*.c csrc/*.h) microtensor/_backend/build_kernels.py

.PHONY: install test train sanitize bench sweep lint graphviz clean

$(STAMP): $(SOURCES)
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

# Installs again when the sources changed, and when this interpreter does not import this checkout from
# elsewhere (a new or reset environment keeps the stamp; the tests' subprocesses then failed to import).
install: graphviz
	@cd / && $(PY) -c "import sys, microtensor, transformer; sys.exit(not microtensor.__file__.startswith('$(CURDIR)/'))" \
		2>/dev/null || rm -f "$(CURDIR)/$(STAMP)"
	@$(MAKE) --no-print-directory -s $(STAMP)

graphviz:  ## the `dot` program for rendering graphs; best effort, never fatal
	@command -v dot >/dev/null 2>&1 || { (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null) \
		|| echo "graphviz not installed: graphs are written as DOT source only"; }

test: install
	$(PY) -m pytest tests

train: install
	$(PY) -m transformer.train --out runs/seed --overwrite
	$(PY) -m transformer.report runs/seed

bench: install
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-columns=median,iqr,ops

sweep: install  ## bad inputs on the library (vs PyTorch, both backends) and the command lines; exit 1 on silent/lost/crash
	$(PY) tools/sweep_bad_inputs.py

lint:
	ruff check .

clean:
	rm -rf build *.egg-info $(STAMP) microtensor/_backend/_kernels*.so

# The kernels built with AddressSanitizer + UndefinedBehaviorSanitizer and their tests run under
# them (the sanitizer runtimes preloaded into Python; leak checks off, CPython keeps memory on
# purpose). The normal build is restored afterwards, whether the tests passed or not.
sanitize: install
	MICROTENSOR_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --force --build-temp build/sanitize
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LD_PRELOAD="$$($${CC:-cc} -print-file-name=libasan.so) $$($${CC:-cc} -print-file-name=libubsan.so)" \
	$(PY) -m pytest tests/test_kernels.py tests/test_kernels_perf_paths.py tests/test_flash_attention.py \
		tests/test_add_layernorm.py -q -p no:cacheprovider; status=$$?; \
	$(PY) setup.py -q build_ext --inplace --force >/dev/null; exit $$status

# ---- seeing inside: report, graph, studies (issue 5) ----
RUN ?= runs/seed
.PHONY: report graph studies

report:  ## the self-contained HTML report of RUN (default runs/seed), after training it
	$(PY) -m transformer.report $(RUN)

graph: install  ## the seed model's loss graph, one node per module
	$(PY) -m transformer.graph --out runs/graph.svg --collapse

studies: install  ## the docs/STUDIES.md tables: ablations and optimizers, 2 seeds x 50 epochs, 2 runs at a time
	$(PY) -m transformer.study ablations --seeds 2
	$(PY) -m transformer.study optimizers --seeds 2

# ---- the text task (issue 11) ----
# The demo corpus is the machine's license texts (/usr/share/common-licenses, Debian's essential base-files):
# ~237K characters of English prose on every Debian/Ubuntu machine, no download. Settings: examples/lm_demo.json.
LM_CORPUS ?= runs/licenses.txt
.PHONY: lm

lm: install  ## a small character GPT trained on the demo corpus, then a sample from it (<= 5 minutes on 2 cores)
	$(PY) -m transformer.text demo $(LM_CORPUS)
	$(PY) -m transformer.train --task text --data $(LM_CORPUS) --config examples/lm_demo.json --out runs/lm --overwrite
	$(PY) -m transformer.sample --ckpt runs/lm/ckpt_best.npz --prompt "This License" --tokens 300 \
		--temperature 0.8 --top-k 40 --seed 1
