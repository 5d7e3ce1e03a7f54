# Transformers, from Paper to Kernel — every command sets up .venv/ at the repository root first.
#   make book   execute every written notebook and build the HTML book (_build/html/index.html)
#   make test   the whole suite: book.yml, lib, kernels (Triton interpreter on CPU), exercises,
#               grader, notebooks (nbval verdicts + time budget) and the HTML build
# More: make lab · make notebooks · make exercises · make grade SUBMISSIONS=dir · make bench · make bench-gpu

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is installed before the package so a GPU user's own CUDA build is never replaced. On this
# project's CPU machines torch==2.13.0 is the CPU build on disk; elsewhere add TORCH_INDEX=<url>.
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_WORKERS ?= 2
SUBMISSIONS ?= submissions
GRADES ?= _build/grades
NBVAL := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: install book test lab notebooks exercises grade bench bench-gpu validate status clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	@touch $(STAMP)

install: $(STAMP)

notebooks: $(STAMP)
	$(PY) -m lib.notebooks build

book: notebooks
	$(PY) -m lib.htmlbook build

test: $(STAMP)
	$(PY) -m lib.book validate
	$(PY) -m lib.exercises generate --check
	$(PY) -m lib.notebooks build
	MPLBACKEND=Agg OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile tests
	@# The notebooks' verdicts are re-checked on their own, one at a time, not beside the busy test workers.
	MPLBACKEND=Agg OMP_WAIT_POLICY=PASSIVE BOOK_HEADLESS=1 $(PY) -m pytest $(NBVAL) chapters

lab: notebooks
	$(VENV)/bin/jupyter lab chapters/

exercises: $(STAMP)
	$(PY) -m lib.exercises generate --ipynb

grade: $(STAMP)
	$(PY) -m lib.grading $(SUBMISSIONS) --out $(GRADES)

bench: $(STAMP)
	$(PY) -m lib.benchmarks --device cpu --out docs/bench/cpu.csv

# One prepared script for a lent GPU: kernel tests on CUDA, then every benchmark (≤ 8 minutes).
bench-gpu: $(STAMP)
	$(PY) -m pytest -q -x -m kernel tests
	$(PY) -m lib.benchmarks --device cuda --out docs/bench/gpu-h200.csv

validate: $(STAMP)
	$(PY) -m lib.book validate

status: $(STAMP)
	$(PY) -m lib.book status

clean:
	rm -rf _build chapters/*/*.ipynb exercises/*.ipynb
