# Training image: train_model.py and hpo.py under the sagemaker-training toolkit.
#   docker run IMAGE train     (what SageMaker runs; SAGEMAKER_PROGRAM picks the script)
# Pinned by digest: the multi-arch index of debian:bookworm-slim. Renew it in both Dockerfiles with the
# Digest line of `docker buildx imagetools inspect debian:bookworm-slim`.
ARG BASE_IMAGE=debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

# ---- wheels stage: compile what ships only as source ----------------------------
FROM ${BASE_IMAGE} AS wheels
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# gcc, libc6-dev, python3-dev: sagemaker-training and its dependency
# pyinstrument-cext ship C extensions as source distributions only;
# python3-venv: pip for building them.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/train.txt requirements/constraints.txt /tmp/requirements/
RUN python3 -m venv /tmp/build \
    && /tmp/build/bin/pip install --no-cache-dir -c /tmp/requirements/constraints.txt pip setuptools \
    && /tmp/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels -c /tmp/requirements/constraints.txt \
        sagemaker-training pyinstrument-cext

# ---- runtime -------------------------------------------------------------------
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="dogbreed-train" \
      org.opencontainers.image.description="SageMaker training image: train_model.py and hpo.py with smdebug"
# python3, python3-venv: the interpreter and its venv; ca-certificates: TLS to
# S3 and torchvision's weight download; tini: PID 1 that forwards SIGTERM
# (spot interruptions) to `train` and reaps DataLoader workers.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*
# Empty: torch from the default registry (CUDA build, runs on CPU too).
# https://download.pytorch.org/whl/cpu: the much smaller CPU-only build.
ARG TORCH_INDEX_URL=
COPY --from=wheels /wheels /tmp/wheels
COPY requirements/train.txt requirements/constraints.txt /tmp/requirements/
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/requirements/constraints.txt pip setuptools \
    && /opt/venv/bin/pip install --no-cache-dir --find-links /tmp/wheels \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -c /tmp/requirements/constraints.txt -r /tmp/requirements/train.txt \
    && rm -rf /tmp/wheels /tmp/requirements \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +
# /opt/dogbreed/bin first: its `train` is the toolkit's, relaying SIGTERM to the script.
# SAGEMAKER_TRAINING_MODULE: the toolkit starts the script under torchrun when the job
# sets sagemaker_torch_distributed_enabled, as one process otherwise.
ENV PATH=/opt/dogbreed/bin:/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    SAGEMAKER_SUBMIT_DIRECTORY=/opt/ml/code \
    SAGEMAKER_PROGRAM=train_model.py \
    SAGEMAKER_TRAINING_MODULE=dogbreed.training.toolkit_entry:run_entry_point
# Code last, so a code change rebuilds only these small layers. The package goes into the venv without its
# dependencies (pinned above), built by the venv's pinned setuptools, with no download.
COPY pyproject.toml /tmp/dogbreed/
COPY src/dogbreed /tmp/dogbreed/src/dogbreed
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation /tmp/dogbreed \
    && rm -rf /tmp/dogbreed
COPY src/train/train /opt/dogbreed/bin/train
COPY src/train/train_model.py src/train/hpo.py /opt/ml/code/
WORKDIR /opt/ml/code
# Runs as root: SageMaker mounts /opt/ml/{input,model,output,checkpoints}
# root-owned, and the training job must write to them.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["train"]
