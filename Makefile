# Every command in the README goes through these targets; each creates .venv when it is missing. They install the
# package with its `train` extra (accelerate, datasets, ...) and `dev` (the test tools, the demo's gradio); a bare
# `pip install .` is the inference-only install (see pyproject.toml).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# On the project's machines a CPU wheel of torch 2.13.0 lies on disk and `pip install torch==2.13.0`
# takes it; elsewhere override, e.g. `make test TORCH_SPEC=torch` (or an index URL of your choice).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?= -n 2 --dist loadgroup  # tests marked xdist_group (the demo's) share one worker

# The main job: offline (scikit-learn's bundled 8x8 digits), a small VQ-VAE, a few minutes on a 2-core CPU.
TRAIN_ARGS ?= --model vqvae --preset mnist --max_train_steps 1000 --kmeans_init true --dead_code_threshold 50 \
	--checkpointing_steps 500 --checkpoints_total_limit 1 \
	--output_dir outputs/vqvae-digits
LAUNCH := $(BIN)/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: install train test bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[train,dev]"
	touch $@

install: $(BIN)/.installed

train: install
	$(LAUNCH) scripts/train.py $(TRAIN_ARGS)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not browser"
	$(BIN)/python -m pytest -m browser tests/test_demo.py

bench: install
	$(BIN)/python benchmarks/quantizer.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache outputs
