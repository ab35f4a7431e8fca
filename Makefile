# Two commands on a fresh machine with only Python: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-all demo pretrained atari atari-gray bench gpu-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first when none is importable: on a machine without an NVIDIA GPU (no nvidia-smi) PyTorch's CPU build from
# its CPU index, never the multi-GB CUDA build a bare `torch` requirement pulls; the default index only if that fails.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,--index-url https://download.pytorch.org/whl/cpu)
$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0 $(TORCH_INDEX) || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The default suite holds a budget of 10 minutes on a 2-core machine (tests/conftest.py reports it), each
# test at most 300 s (pytest-timeout); what does not fit is marked `slow` and runs in test-all.
# PYTEST_ARGS adds options, e.g. PYTEST_ARGS=--durations=20 (as .ci/run does).
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/magi demo --out outputs/demo

# Rebuild pretrained/ (6 min on one H100, ~10 hours on one CPU core; resumable): train, then export the EMA weights.
pretrained: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/magi train --config configs/demo_pretrained.yaml --out runs/demo_pretrained --resume auto
	$(VENV)/bin/magi demo --export-pretrained runs/demo_pretrained --pretrained pretrained

# Rebuild pretrained/atari/, the Boxing world model (docs/world-model.md), as one recipe: records 48 whole rounds of
# `all-mix` in the hud_lag frame layout (the score strip legible, one frame late), trains the frame tokenizer
# (configs/atari_tokenizer_hud.yaml, ~16 CPU min) and the world model on its latents in one schedule
# (configs/atari_world_model_hud.yaml: 14,000 steps from scratch, ~4 h on both cores of a 2.4 GHz EPYC, ~9 h on
# one), exports both to pretrained/atari, trains the reward and end model beside them (~4 min) and measures the
# sampler setting `magi play` uses (pretrained/atari/play.json). Interruptible: run it again and it continues.
atari: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/magi tokenizer train --config configs/atari_tokenizer_hud.yaml --out runs/atari_tokenizer_hud \
	    --resume auto --export runs/atari_tokenizer_hud/export
	OMP_NUM_THREADS=1 $(VENV)/bin/magi train --config configs/atari_world_model_hud.yaml --out runs/atari_world_hud --resume auto
	$(VENV)/bin/magi demo --export-command "make atari" --export-pretrained runs/atari_world_hud --pretrained pretrained/atari
	OMP_NUM_THREADS=1 $(PY) experiments/reward_model.py --layout hud_lag --tokenizer pretrained/atari/tokenizer \
	    --out pretrained/atari/reward --results results/world_model/reward_hud_lag --steps 2000 --clock
	$(PY) benchmarks/play.py --model pretrained/atari --write-model-setting

# Round 1's world model on gray pixels (configs/atari_world_model.yaml, pretrained/atari_gray/), for comparison.
atari-gray: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/magi train --config configs/atari_world_model.yaml --out runs/atari_ctf --resume auto
	$(VENV)/bin/magi demo --export-pretrained runs/atari_ctf --pretrained pretrained/atari_gray --export-command "make atari-gray"

# Every benchmark this machine can run; those it cannot (gpu_check without CUDA, diamond_compare without a DIAMOND
# checkout in DIAMOND_DIR) are named with the reason and skipped. `magi bench --list` says which.
bench: $(STAMP)
	$(VENV)/bin/magi bench

# The checks that need a GPU (<= 8 min on one): CUDA tests, training steps of magi-b and magi-850m (bf16, fp32),
# compiled FlexAttention at the paper's shapes, 200 steps of magi-850m, then (time allowing) which bf16 backward
# block layouts compile. `python benchmarks/gpu_check.py --cpu-smoke`
# runs the same steps at tiny shapes on the CPU.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) outputs runs

# The page that plays the shipped world model in the browser, no server behind it (docs/export.md): onnxruntime-web as
# pinned in web/package-lock.json, then `magi export web` writes site/ (serve it with `magi serve-web site`).
.PHONY: web
web: $(STAMP)
	npm ci --prefix web --no-audit --no-fund
	OMP_NUM_THREADS=1 $(VENV)/bin/magi export web pretrained/atari --out site

# Text to video on captioned moving digits (configs/text_digits.yaml, docs/text.md): the small byte-level T5 encoder
# it reads captions with (written once; T5's initialisation from seed 0), training from the class-conditional demo
# model in pretrained/ (interruptible: run it again and it continues), the export into pretrained/text_digits/ (encoder included), then its caption accuracy.
.PHONY: text-digits
text-digits: $(STAMP)
	test -f pretrained/text_digits/text_encoder/config.json || $(PY) -m magi.text byte-t5 pretrained/text_digits/text_encoder
	OMP_NUM_THREADS=1 $(VENV)/bin/magi train --config configs/text_digits.yaml --out runs/text_digits --resume auto
	$(VENV)/bin/magi demo --export-pretrained runs/text_digits --pretrained pretrained/text_digits --export-command "make text-digits"
	OMP_NUM_THREADS=1 $(VENV)/bin/magi eval text pretrained/text_digits --out results/text_digits

# The browser and engine measurements (docs/export.md) in one command (~45 min on 2 cores; run it with nothing else on the machine):
# the play loop's engines x 1/2 threads, the page (make web's site/) isolated 2 threads / 1 thread / not isolated for
# 5 minutes each, `magi play` from a fresh start (no compile cache) with a CPU-bound job beside it for 60 s and
# 10,000 frames, and DIAMOND side by side (DIAMOND_DIR=/path/to/diamond; skipped with the reason without it).
# Writes results/play_engines.json, web_play.json, play_browser/fresh_start_*.json, diamond_compare.json and
# measure_play.json (docs/export.md). MEASURE_NOTE says what else ran.
.PHONY: measure-play
measure-play: $(STAMP)
	$(PY) experiments/measure_play.py --note "$(MEASURE_NOTE)"
