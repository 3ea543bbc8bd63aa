# bmvit — the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
BMVIT  := $(VENV)/bin/bmvit
STAMP  := $(VENV)/.bmvit-installed
DEMO_DATA ?= data/synthetic
DEMO_RUN  ?= runs/demo
# The demo trains data-parallel: DEMO_PROCS processes of one thread each share the config's batch of
# 16, so DEMO_PROCS must divide 16 (on 2 cores about 1.5x the steps per minute of one 2-thread
# process, from the steps/s of two separate runs; docs/ablations.md). Evaluation in batches of 4 key frames
# (16 clips with the flip and time TTA views): on CPU ~1.4x faster than 16 for this model, the same figures.
DEMO_PROCS ?= 2

.PHONY: install demo test clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

# Install if needed -> synthetic data -> train the tiny model -> its final evaluation (frame-mAP) and a
# rendered clip (--render 1; RUN/eval/ holds what `bmvit eval --run RUN --render 1` would write).
demo: install
	$(BMVIT) synth --out $(DEMO_DATA) --videos 320   # 320 train + 40 val videos, ~30 s
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node=$(DEMO_PROCS) -m bmvit train \
	  --config configs/synthetic/tiny.yaml --overwrite --render 1 data.root=$(DEMO_DATA) train.out_dir=$(DEMO_RUN) \
	  train.threads=1 train.batch_size=$$((16 / $(DEMO_PROCS))) eval.batch_size=4

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(DEMO_RUN) $(DEMO_DATA)
