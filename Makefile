# Train and serve a dog-breed classifier on Amazon SageMaker.
# `make` (or `make help`) lists the targets. Every variable below can be
# overridden on the command line, e.g. `make train EPOCHS=5 MODEL=mobilenet_v2`.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
# The local-mode and cloud workflows' venv: SageMaker Python SDK v3 and boto3, no torch (pip install .[cloud])
CLOUD_VENV ?= .venv-cloud
BUILD_DIR ?= build

# Native training on the bundled sample data (random init: no download needed).
DATA_DIR ?= local_data/sample
MODEL ?= resnet18
EPOCHS ?= 5
BATCH_SIZE ?= 16
IMAGE_SIZE ?= 64
# Per architecture: MobileNetV2 from scratch needs a larger step to learn the sample in 5 epochs.
LEARNING_RATE ?= $(if $(filter mobilenet_v2,$(MODEL)),0.003,0.001)
PRETRAINED ?= false
FREEZE_BACKBONE ?= false
TRAIN_ARGS ?=
TRAIN_OUT ?= $(BUILD_DIR)/train
# make export-onnx: an artifact folder, and optionally a dataset with its classes (parity on real images, int8)
MODEL_DIR ?=
EXPORT_DATA_DIR ?=

# make debug-report: a saved smdebug trial (a job's tensors folder) and, optionally, the folder holding its
# metrics.json and plots, where the report goes (default: the trial's parent folder).
DEBUG_DIR ?=
DEBUG_OUTPUT_DIR ?=

# The real dataset (make data).
DATA_URL ?= https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip
DATA_SHA256 ?=
DATA_DEST ?= local_data

# Native serving (make serve).
SERVE_PORT ?= 8080
MODEL_STORE ?= $(BUILD_DIR)/model-store
MOBILE_TRAIN_OUT ?= $(BUILD_DIR)/train-mobile
TARGET ?= dog-breed-classifier/model.tar.gz
MOBILE_TARGET ?= dog-breed-classifier-mobile/model.tar.gz
SERVE_PID := $(BUILD_DIR)/serve.pid

# Images (make build push).
# The Dockerfiles' pinned base (NAME:TAG@sha256:...). Where no registry answers, make base-image builds a
# stand-in tagged NAME:TAG, and the builds use that (see BASE_REF).
BASE_IMAGE ?= $(shell sed -n 's/^ARG BASE_IMAGE=//p' docker/train.Dockerfile)
# Empty: torch from the default registry (CUDA build, runs on CPU too).
# https://download.pytorch.org/whl/cpu gives a much smaller CPU-only image.
TORCH_INDEX_URL ?=
TRAIN_IMAGE ?= dogbreed-train
SERVE_IMAGE ?= dogbreed-serve
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
# true: also tag (and push) :latest
LATEST ?= false
REGION ?= $(or $(AWS_REGION),$(AWS_DEFAULT_REGION))
# Empty: from STS at push time.
ACCOUNT ?=
# Empty: ECR of ACCOUNT and REGION. Any other registry: HOST[:PORT][/PATH].
REGISTRY ?=
# The legacy builder when the buildx plugin is missing (as with Debian's docker.io).
DOCKER_BUILDKIT ?= $(shell docker buildx version >/dev/null 2>&1 && echo 1 || echo 0)
export DOCKER_BUILDKIT

# SageMaker local mode (make local-train, local-hpo) and the local serving container.
LOCAL_OUT ?= $(BUILD_DIR)/local
# make local-train and train-remote: containers or instances (algo-1, algo-2, ...); above 1, data-parallel
# training under torchrun (torch_distributed)
INSTANCE_COUNT ?= 1
LOCAL_HPARAMS ?= -H epochs=$(EPOCHS) -H batch-size=$(BATCH_SIZE) -H image-size=$(IMAGE_SIZE) \
	-H learning-rate=$(LEARNING_RATE) -H pretrained=$(PRETRAINED) -H freeze-backbone=$(FREEZE_BACKBONE) -H model=$(MODEL)
HPO_GRID ?= --grid learning-rate=0.001,0.01 --grid batch-size=16,32
LOCAL_STORE ?= $(BUILD_DIR)/local-store
LOCAL_SERVE_NAME ?= dogbreed-local-serve
LOCAL_SERVE_PORT ?= 8080

# Cloud workflows on SageMaker (dogbreed cloud). Unset
# settings fall back to the environment: SAGEMAKER_ROLE, SAGEMAKER_BUCKET ...
ROLE ?=
# Empty: the SDK's default bucket, sagemaker-REGION-ACCOUNT.
BUCKET ?=
PREFIX ?= dogbreed
ENDPOINT ?= dogbreed
# Training channel for hpo and train-remote: s3://BUCKET/PATH/ or a local folder (synced to S3).
DATA ?=
TRAIN_INSTANCE_TYPE ?= ml.g4dn.xlarge
SERVE_INSTANCE_TYPE ?= ml.m5.large
TRANSFORM_INSTANCE_TYPE ?= ml.m5.large
# true: managed spot training (checkpoints in S3, resumed after an interruption)
SPOT ?= false
# false: start the job and return
WAIT ?= true
# false: train-remote without Debugger rules and Profiler (accounts without SageMaker Debugger)
DEBUGGER ?= true
# train-remote: true runs torchrun on one multi-GPU instance too (INSTANCE_COUNT above 1 always does)
DISTRIBUTED ?= false
MAX_JOBS ?= 8
MAX_PARALLEL_JOBS ?= 2
OBJECTIVE ?= validation:accuracy
EARLY_STOPPING ?= Auto
# Hyperparameters for hpo (fixed ones) and train-remote, e.g. REMOTE_HPARAMS="-H model=resnet50 -H epochs=10"
REMOTE_HPARAMS ?=
TUNING_JOB ?=
FROM_TUNING_JOB ?=
TRAINING_JOB ?=
# deploy: the two served models, local model.tar.gz or s3:// URIs (default: the newest make local-train outputs,
# as make local-serve serves them)
# (run from whichever venv exists: deploy has the workflows' one, explain the other)
newest_model = $(shell $(if $(wildcard $(CLOUD_VENV)/bin/python),$(WORKFLOWS),$(DOGBREED)) local newest $(1) 2>/dev/null)
MODEL_DATA ?= $(call newest_model,$(LOCAL_OUT)/resnet18)
MOBILE_MODEL_DATA ?= $(call newest_model,$(LOCAL_OUT)/mobilenet_v2)
# deploy's autoscaling, on with MAX_INSTANCES and TARGET_INVOCATIONS: instances from MIN_INSTANCES (default: one)
# to MAX_INSTANCES, aiming at TARGET_INVOCATIONS invocations per instance per minute
MAX_INSTANCES ?=
MIN_INSTANCES ?=
TARGET_INVOCATIONS ?=
# add-model: TARGET=PATH_OR_S3_URI, e.g. NEW_MODEL=dog-breed-classifier-v2/model.tar.gz=build/.../model.tar.gz
NEW_MODEL ?=
# invoke: the image to classify, the targets (default: both), LOCAL=true for the make local-serve container
IMAGE_FILE ?= local_data/sample/test/001.Crimson_disc/Crimson_disc_00001.jpg
TARGETS ?=
TOP_K ?= 5
LOCAL ?= false
# batch-transform: an S3 folder of images, and the instances the job runs on
BATCH_INPUT ?=
TRANSFORM_INSTANCES ?= 1
# explain: images or folders; the model is EXPLAIN_MODEL (a folder or model.tar.gz; default: the newest make
# local-train ResNet18, else the make train one), or TARGET of the make local-serve container (LOCAL=true) or of
# ENDPOINT (EXPLAIN_ENDPOINT=true). EXPLAIN_ARGS adds flags, e.g. --samples 512 --score local_data/sample/test.
EXPLAIN_IMAGES ?= $(IMAGE_FILE)
EXPLAIN_MODEL ?= $(or $(MODEL_DATA),$(TRAIN_OUT)/model)
EXPLAIN_ENDPOINT ?= false
EXPLAIN_OUT ?= $(BUILD_DIR)/explain
EXPLAIN_ARGS ?=
# clarify: an S3 folder of JPEG images, explained by SageMaker Clarify against ENDPOINT's TARGET
CLARIFY_INPUT ?=
CLARIFY_INSTANCE_TYPE ?= ml.m5.xlarge
# teardown: models or all to also delete S3 data
DELETE_S3 ?=
CLOUD = $(WORKFLOWS) cloud
CLOUD_SETTINGS = $(if $(REGION),--region $(REGION)) $(if $(ROLE),--role $(ROLE)) $(if $(BUCKET),--bucket $(BUCKET)) \
	--prefix $(PREFIX) --endpoint $(ENDPOINT) --tag $(TAG) --train-repository $(TRAIN_IMAGE) \
	--serve-repository $(SERVE_IMAGE) $(if $(REGISTRY),--registry $(REGISTRY))
JOB_SETTINGS = $(if $(DATA),--data $(DATA)) --instance-type $(TRAIN_INSTANCE_TYPE) \
	$(if $(filter true,$(SPOT)),--spot) $(if $(filter false,$(WAIT)),--no-wait) $(REMOTE_HPARAMS)

PYTEST_ARGS ?=
# make bench-serve: also serve the code at this git revision, alternating, to measure a change
BENCH_BASELINE_REF ?=
# make bench-serve: resnet18, mobilenet_v2 or resnet50
BENCH_MODEL ?= resnet18

# What the builds start FROM, as make base-image found it: BASE_IMAGE, or its local stand-in.
BASE_REF := $(BUILD_DIR)/base-image.ref
VENV_PY := $(VENV)/bin/python
# The project's one command line (dogbreed --help), run from the venv.
DOGBREED := $(VENV_PY) -m dogbreed
VENV_STAMP := $(VENV)/.installed
# The same command line from the workflows' venv: dogbreed local and dogbreed cloud.
WORKFLOWS := $(CLOUD_VENV)/bin/python -m dogbreed
CLOUD_STAMP := $(CLOUD_VENV)/.installed
# Installs and starts what the targets need from the system (make system; scripts/system.sh says what and why).
SYSTEM = BASE_IMAGE=$(BASE_IMAGE) PYTHON=$(PYTHON) scripts/system.sh
# The compiled MMS management guard, installed beside the venv where the serving launcher finds it.
MMS_GUARD := $(VENV)/share/dogbreed/mms-guard/dogbreed/mms/GuardedManagementHandler.class

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Targets (override variables with make TARGET VAR=value):\n"} \
		/^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# make_venv VENV,CONSTRAINTS: the steps both venvs start with: Python and the system's venv support checked, the venv
# created when missing, pip and setuptools pinned. An existing venv is updated in place, never re-created: another
# python3.11 on PATH would rewrite its pyvenv.cfg under the packages installed for the first one.
define make_venv
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or set PYTHON=" >&2; exit 1; }
	@$(SYSTEM) python
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet -c $(2) pip setuptools
endef

$(VENV_STAMP): requirements/train.txt requirements/serve.txt requirements/dev.txt requirements/constraints.txt pyproject.toml
	$(call make_venv,$(VENV),requirements/constraints.txt)
	$(VENV_PY) -m pip install --quiet -c requirements/constraints.txt -r requirements/dev.txt
	$(VENV_PY) -m pip install --quiet --no-deps -e .
	@touch $@

# Created on first use by the targets that run the workflows, as the venv above is by the rest.
$(CLOUD_STAMP): requirements/cloud.txt requirements/cloud-constraints.txt pyproject.toml
	$(call make_venv,$(CLOUD_VENV),requirements/cloud-constraints.txt)
	$(CLOUD_VENV)/bin/python -m pip install --quiet -c requirements/cloud-constraints.txt -e ".[cloud]"
	@touch $@

$(MMS_GUARD): $(VENV_STAMP) $(shell find src/mms-guard -type f 2>/dev/null)
	@$(SYSTEM) java
	src/mms-guard/build.sh $(VENV_PY) $(VENV)/share/dogbreed/mms-guard

.PHONY: system
system: ## Install and start what every target needs (Docker engine, compose, Java 17 JDK ...): Debian/Ubuntu, root or sudo
	@$(SYSTEM) test

.PHONY: venv
venv: $(VENV_STAMP) $(MMS_GUARD) ## Create the Python venv with every pinned package and build the MMS guard

.PHONY: cloud-venv
cloud-venv: $(CLOUD_STAMP) ## Create the workflows' venv (SageMaker Python SDK v3, no torch); the workflow targets do on first use

.PHONY: train
train: $(VENV_STAMP) ## Train natively on DATA_DIR into TRAIN_OUT (fresh run: old checkpoints are removed)
	rm -rf $(TRAIN_OUT)
	SAGEMAKER_BASE_DIR=$(abspath $(TRAIN_OUT)) $(DOGBREED) train \
		--data-dir $(DATA_DIR) --model $(MODEL) --epochs $(EPOCHS) --batch-size $(BATCH_SIZE) \
		--image-size $(IMAGE_SIZE) --learning-rate $(LEARNING_RATE) --pretrained $(PRETRAINED) \
		--freeze-backbone $(FREEZE_BACKBONE) $(TRAIN_ARGS)
	@echo "model: $(TRAIN_OUT)/model  metrics and plots: $(TRAIN_OUT)/output/data"

.PHONY: debug-report
debug-report: $(VENV_STAMP) ## (Re)build rules.json and debugger-report.html from the smdebug trial in DEBUG_DIR
	@test -n "$(DEBUG_DIR)" || { echo "make debug-report: set DEBUG_DIR to a trial, e.g. $(TRAIN_OUT)/output/data/tensors" >&2; exit 2; }
	$(DOGBREED) debug-report $(DEBUG_DIR) $(if $(DEBUG_OUTPUT_DIR),--output-dir $(DEBUG_OUTPUT_DIR))

# make report-screenshot: the report to picture and the PNG to write (the training page's picture by default).
REPORT ?= $(TRAIN_OUT)/output/data/debugger-report.html
SCREENSHOT ?= docs/debugger-report.png
SCREENSHOT_HEIGHT ?= 3900

.PHONY: report-screenshot
report-screenshot: ## PNG screenshot of REPORT (an HTML report) into SCREENSHOT, SCREENSHOT_HEIGHT pixels tall, with headless Chromium
	@command -v chromium >/dev/null || { echo "make report-screenshot: needs chromium (apt-get install chromium)" >&2; exit 2; }
	@test -f "$(REPORT)" || { echo "make report-screenshot: no report at $(REPORT) (make train writes one)" >&2; exit 2; }
	mkdir -p $(dir $(SCREENSHOT))
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,$(SCREENSHOT_HEIGHT) \
		--screenshot=$(abspath $(SCREENSHOT)) file://$(abspath $(REPORT)) 2>/dev/null

.PHONY: train-mobile
train-mobile: ## Train a MobileNetV2 the same way into MOBILE_TRAIN_OUT (the second served model)
	$(MAKE) train MODEL=mobilenet_v2 TRAIN_OUT=$(MOBILE_TRAIN_OUT)

.PHONY: export-onnx
export-onnx: $(VENV_STAMP) ## Add model.onnx to the artifact in MODEL_DIR (and model.int8.onnx with EXPORT_DATA_DIR)
	@test -n "$(MODEL_DIR)" || { echo "error: set MODEL_DIR to an artifact folder (with model.pth and metadata.json)" >&2; exit 1; }
	$(DOGBREED) export --model-dir $(MODEL_DIR) $(if $(EXPORT_DATA_DIR),--data-dir $(EXPORT_DATA_DIR))

.PHONY: model-store
model-store: $(VENV_STAMP) ## Pack the trained models as model.tar.gz under their TargetModel paths in MODEL_STORE
	@test -f $(TRAIN_OUT)/model/metadata.json || { echo "error: no model in $(TRAIN_OUT)/model; run make train first" >&2; exit 1; }
	$(DOGBREED) package --model-dir $(TRAIN_OUT)/model --store $(MODEL_STORE) --target $(TARGET)
	@if [ -f $(MOBILE_TRAIN_OUT)/model/metadata.json ]; then \
		$(DOGBREED) package --model-dir $(MOBILE_TRAIN_OUT)/model --store $(MODEL_STORE) --target $(MOBILE_TARGET); \
	else echo "note: no MobileNetV2 in $(MOBILE_TRAIN_OUT) (make train-mobile adds one)"; fi

.PHONY: serve
serve: model-store $(MMS_GUARD) ## Serve MODEL_STORE natively with MMS on 127.0.0.1:SERVE_PORT (Ctrl-C or make serve-stop)
	SAGEMAKER_BIND_TO_PORT=$(SERVE_PORT) \
		$(DOGBREED) serve --model-store $(MODEL_STORE) --pid-file $(SERVE_PID)

.PHONY: serve-stop
serve-stop: $(VENV_STAMP) ## Stop the server that make serve started (MMS and all its workers)
	@$(DOGBREED) serve --stop --pid-file $(SERVE_PID)

.PHONY: base-image
base-image: ## Make sure BASE_IMAGE exists locally (pulled, or a stand-in built with debootstrap when no registry answers)
	@$(SYSTEM) docker
	docker/make-base-image.sh $(BASE_IMAGE) $(BASE_REF)

# The base each image was built on, in its labels: the reference and, where it was pulled, its digest. A stand-in
# made by make base-image adds its own label, dogbreed.base.stand-in, which the images inherit.
BASE_LABELS = --label org.opencontainers.image.base.name="$$(cat $(BASE_REF))" \
	--label org.opencontainers.image.base.digest="$$(docker image inspect \
		--format '{{if .RepoDigests}}{{index .RepoDigests 0}}{{end}}' "$$(cat $(BASE_REF))" | sed 's/^[^@]*@//')"

.PHONY: build
build: build-train build-serve ## Build both images, tagged TAG

.PHONY: build-train
build-train: base-image ## Build the training image TRAIN_IMAGE:TAG
	docker build --network=host -f docker/train.Dockerfile --build-arg BASE_IMAGE=$$(cat $(BASE_REF)) $(BASE_LABELS) \
		--build-arg TORCH_INDEX_URL=$(TORCH_INDEX_URL) -t $(TRAIN_IMAGE):$(TAG) \
		$(if $(filter true,$(LATEST)),-t $(TRAIN_IMAGE):latest) .

.PHONY: build-serve
build-serve: base-image ## Build the serving image SERVE_IMAGE:TAG
	docker build --network=host -f docker/serve.Dockerfile --build-arg BASE_IMAGE=$$(cat $(BASE_REF)) $(BASE_LABELS) \
		-t $(SERVE_IMAGE):$(TAG) \
		$(if $(filter true,$(LATEST)),-t $(SERVE_IMAGE):latest) .

.PHONY: push
push: $(VENV_STAMP) ## Push both images to REGISTRY (default: ECR, repositories created with scan-on-push)
	$(DOGBREED) registry push --image $(TRAIN_IMAGE):$(TAG) --image $(SERVE_IMAGE):$(TAG) \
		$(if $(REGISTRY),--registry $(REGISTRY)) $(if $(REGION),--region $(REGION)) \
		$(if $(ACCOUNT),--account $(ACCOUNT)) $(if $(filter true,$(LATEST)),--latest)

.PHONY: local-train
local-train: $(CLOUD_STAMP) ## Train with the training image in SageMaker local mode on DATA_DIR (builds the image if missing)
	@$(SYSTEM) docker
	@docker image inspect $(TRAIN_IMAGE):$(TAG) >/dev/null 2>&1 || $(MAKE) build-train
	$(WORKFLOWS) local train --image $(TRAIN_IMAGE):$(TAG) --data $(DATA_DIR) \
		--output $(LOCAL_OUT)/$(MODEL) --instance-count $(INSTANCE_COUNT) $(LOCAL_HPARAMS)

.PHONY: local-hpo
local-hpo: $(CLOUD_STAMP) ## A few local-mode hpo.py trials over HPO_GRID; prints the best
	@$(SYSTEM) docker
	@docker image inspect $(TRAIN_IMAGE):$(TAG) >/dev/null 2>&1 || $(MAKE) build-train
	$(WORKFLOWS) local hpo --image $(TRAIN_IMAGE):$(TAG) --data $(DATA_DIR) \
		--output $(LOCAL_OUT)/hpo $(LOCAL_HPARAMS) $(HPO_GRID)

.PHONY: local-serve
local-serve: $(CLOUD_STAMP) ## Run the serving image on 127.0.0.1:LOCAL_SERVE_PORT with the local-train models as targets
	@$(SYSTEM) docker
	@docker image inspect $(SERVE_IMAGE):$(TAG) >/dev/null 2>&1 || $(MAKE) build-serve
	$(WORKFLOWS) local serve --image $(SERVE_IMAGE):$(TAG) --outputs $(LOCAL_OUT) --store $(LOCAL_STORE) \
		--port $(LOCAL_SERVE_PORT) --name $(LOCAL_SERVE_NAME)

.PHONY: stop
stop: ## Stop the container that make local-serve started, and nothing else
	@docker stop $(LOCAL_SERVE_NAME) >/dev/null 2>&1 && echo "stopped $(LOCAL_SERVE_NAME)" || echo "$(LOCAL_SERVE_NAME) is not running"

.PHONY: hpo
hpo: $(CLOUD_STAMP) ## Hyperparameter tuning job (hpo.py) on DATA; prints the best job and hyperparameters
	$(CLOUD) hpo $(CLOUD_SETTINGS) $(JOB_SETTINGS) --max-jobs $(MAX_JOBS) --max-parallel-jobs $(MAX_PARALLEL_JOBS) \
		--objective $(OBJECTIVE) --early-stopping $(EARLY_STOPPING)

.PHONY: best
best: $(CLOUD_STAMP) ## Best training job and hyperparameters of TUNING_JOB
	$(CLOUD) best $(CLOUD_SETTINGS) $(if $(TUNING_JOB),--tuning-job $(TUNING_JOB))

.PHONY: train-remote
train-remote: $(CLOUD_STAMP) ## Training job with Debugger rules and Profiler report (FROM_TUNING_JOB: its best hyperparameters)
	$(CLOUD) train-remote $(CLOUD_SETTINGS) $(JOB_SETTINGS) $(if $(FROM_TUNING_JOB),--from-tuning-job $(FROM_TUNING_JOB)) \
		$(if $(filter false,$(DEBUGGER)),--no-debugger) --instance-count $(INSTANCE_COUNT) \
		$(if $(filter true,$(DISTRIBUTED)),--distributed)

.PHONY: training-result
training-result: $(CLOUD_STAMP) ## Model, Debugger tensors, profiler report and rule results of TRAINING_JOB
	$(CLOUD) training-result $(CLOUD_SETTINGS) $(if $(TRAINING_JOB),--training-job $(TRAINING_JOB))

.PHONY: deploy
deploy: $(CLOUD_STAMP) ## Multi-model endpoint ENDPOINT serving MODEL_DATA and MOBILE_MODEL_DATA (updated in place; MAX_INSTANCES: autoscaling)
	$(CLOUD) deploy $(CLOUD_SETTINGS) --instance-type $(SERVE_INSTANCE_TYPE) \
		$(if $(MAX_INSTANCES),--max-instances $(MAX_INSTANCES)) $(if $(MIN_INSTANCES),--min-instances $(MIN_INSTANCES)) \
		$(if $(TARGET_INVOCATIONS),--target-invocations $(TARGET_INVOCATIONS)) \
		$(if $(MODEL_DATA),--model $(TARGET)=$(MODEL_DATA)) \
		$(if $(MOBILE_MODEL_DATA),--model $(MOBILE_TARGET)=$(MOBILE_MODEL_DATA))

.PHONY: add-model
add-model: $(CLOUD_STAMP) ## Upload NEW_MODEL (TARGET=PATH) to the endpoint's model data; live at once
	$(CLOUD) add-model $(CLOUD_SETTINGS) $(if $(NEW_MODEL),--model $(NEW_MODEL))

.PHONY: invoke
invoke: $(CLOUD_STAMP) ## Classify IMAGE_FILE with each target of ENDPOINT (LOCAL=true: the make local-serve container)
	$(CLOUD) invoke $(CLOUD_SETTINGS) --image $(IMAGE_FILE) --top-k $(TOP_K) $(foreach t,$(TARGETS),--target $(t)) \
		$(if $(filter true,$(LOCAL)),--local-port $(LOCAL_SERVE_PORT))

.PHONY: batch-transform
batch-transform: $(CLOUD_STAMP) ## Batch transform over the images in BATCH_INPUT (s3://...) on TRANSFORM_INSTANCES instances
	$(CLOUD) batch-transform $(CLOUD_SETTINGS) $(if $(BATCH_INPUT),--input $(BATCH_INPUT)) --instance-type $(TRANSFORM_INSTANCE_TYPE) \
		--instance-count $(TRANSFORM_INSTANCES) $(if $(filter false,$(WAIT)),--no-wait)

.PHONY: clarify
clarify: $(CLOUD_STAMP) ## SageMaker Clarify explainability job over CLARIFY_INPUT (s3://... JPEGs) on ENDPOINT's TARGET
	$(CLOUD) clarify $(CLOUD_SETTINGS) $(if $(CLARIFY_INPUT),--input $(CLARIFY_INPUT)) --target $(TARGET) \
		--instance-type $(CLARIFY_INSTANCE_TYPE) $(if $(filter false,$(WAIT)),--no-wait)

.PHONY: teardown
teardown: $(CLOUD_STAMP) ## Delete ENDPOINT, its configs and models (S3 data only with DELETE_S3=models|all)
	$(CLOUD) teardown $(CLOUD_SETTINGS) $(if $(DELETE_S3),--delete-s3 $(DELETE_S3))

.PHONY: explain
explain: $(VENV_STAMP) ## Why the model chose: EXPLAIN_IMAGES into EXPLAIN_OUT/explain-report.html (LOCAL=true, EXPLAIN_ENDPOINT=true)
	$(DOGBREED) explain $(EXPLAIN_IMAGES) --out $(EXPLAIN_OUT) $(if $(filter true,$(LOCAL)),\
		--local-port $(LOCAL_SERVE_PORT) --target $(TARGET),$(if $(filter true,$(EXPLAIN_ENDPOINT)),\
		--endpoint $(ENDPOINT) --target $(TARGET) $(if $(REGION),--region $(REGION)),--artifact $(EXPLAIN_MODEL))) \
		$(EXPLAIN_ARGS)

.PHONY: sample-data
sample-data: $(VENV_STAMP) ## Regenerate the bundled sample dataset in local_data/sample
	$(VENV_PY) local_data/make_sample.py --out local_data/sample

.PHONY: data
data: $(VENV_STAMP) ## Download and unpack the real dogImages set into DATA_DEST (resumable)
	$(DOGBREED) download --url $(DATA_URL) --dest $(DATA_DEST) $(if $(DATA_SHA256),--sha256 $(DATA_SHA256))

.PHONY: lint
lint: $(VENV_STAMP) ## Lint, format check and type check, as CI runs them (settings in pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# mkdocs-material prints a notice about its successor at every build; the docs say what we chose and why.
MKDOCS = NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs

.PHONY: docs
docs: $(VENV_STAMP) ## Build the documentation site (docs/, reference tables generated from the code) into build/site
	$(MKDOCS) build --strict

.PHONY: docs-serve
docs-serve: $(VENV_STAMP) ## Serve the documentation site on 127.0.0.1:8000, rebuilt on every change
	$(MKDOCS) serve --dev-addr 127.0.0.1:8000

.PHONY: format
format: $(VENV_STAMP) ## Format the tree and apply ruff's safe fixes (import order ...)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: test
test: $(VENV_STAMP) $(CLOUD_STAMP) $(MMS_GUARD) ## Run the whole test suite (installs and starts what it needs first: make system)
	@$(SYSTEM) test
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

.PHONY: bench-train
bench-train: $(VENV_STAMP) ## Training pipeline throughput vs a bare in-memory loop
	$(VENV_PY) bench/train_throughput.py

.PHONY: bench-ddp
bench-ddp: $(VENV_STAMP) ## Training images/s of one process vs two under torchrun, alternating rounds
	$(VENV_PY) bench/train_ddp.py

# TorchServe 0.12 (archived), only for the serving benchmark's comparison, outside the venv.
TORCHSERVE_HOME := build/torchserve

$(TORCHSERVE_HOME)/ts/__init__.py: $(VENV_STAMP)
	$(VENV_PY) -m pip install --quiet --no-deps --target $(TORCHSERVE_HOME) torchserve==0.12.0 torch-model-archiver==0.12.0

.PHONY: bench-serve
bench-serve: $(VENV_STAMP) $(MMS_GUARD) $(TORCHSERVE_HOME)/ts/__init__.py ## Serving speed: MMS+ONNX Runtime vs torch in-process, ORT in-process and TorchServe
	$(VENV_PY) bench/serve_latency.py --torchserve --model $(BENCH_MODEL) \
		$(if $(BENCH_BASELINE_REF),--baseline-ref $(BENCH_BASELINE_REF))

# make bench-mme: the memory limits to measure at, and the revision whose image has a worker per model
BENCH_MEMORY ?= 768m 2g
BENCH_MME_BASELINE_REF ?= 0f2dbb9

.PHONY: bench-mme
bench-mme: $(VENV_STAMP) build-serve ## Models per GiB under docker run --memory: shared worker vs a worker per model
	$(VENV_PY) bench/mme_memory.py --image $(SERVE_IMAGE):$(TAG) --limit $(BENCH_MEMORY) \
		--baseline-ref $(BENCH_MME_BASELINE_REF)

.PHONY: bench-explain
bench-explain: $(VENV_STAMP) $(MMS_GUARD) ## One explanation (ResNet18 int8, 20 segments, 256 samples): in-process vs the local server
	$(VENV_PY) bench/explain.py

.PHONY: clean
clean: ## Remove build outputs (keeps both venvs)
	rm -rf $(BUILD_DIR) .pytest_cache
