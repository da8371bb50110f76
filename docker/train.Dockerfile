# Training image: train_model.py and hpo.py under the sagemaker-training toolkit.
#   docker run IMAGE train     (what SageMaker runs; SAGEMAKER_PROGRAM picks the script)
# Pinned by digest: the multi-arch index of debian:bookworm-slim. Renew it in both Dockerfiles with the
# Digest line of `docker buildx imagetools inspect debian:bookworm-slim`.
ARG BASE_IMAGE=debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

# ---- venv stage: compile what ships only as source, install the pinned packages --
# Downloads happen here only: the build host's CA bundle (build/build-ca, from make
# base-image) is read in this stage and never reaches the image, nor do the compilers.
FROM ${BASE_IMAGE} AS venv
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# gcc, libc6-dev, python3-dev: sagemaker-training and its dependency
# pyinstrument-cext ship C extensions as source distributions only;
# python3-venv: the venv; ca-certificates: TLS for pip.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY requirements/train.txt requirements/constraints.txt /tmp/requirements/
# constraints.txt: a file that is always there, so the copy works without a host bundle too, and one these
# layers depend on anyway (pyproject.toml would rebuild them on every change to the package's metadata).
COPY requirements/constraints.txt build/build-ca* /tmp/build-ca/
RUN if [ -f /tmp/build-ca/ca-bundle.crt ]; then export PIP_CERT=/tmp/build-ca/ca-bundle.crt; fi \
    && python3 -m venv /tmp/build \
    && /tmp/build/bin/pip install --no-cache-dir -c /tmp/requirements/constraints.txt pip setuptools \
    && /tmp/build/bin/pip wheel --no-cache-dir --no-deps -w /wheels -c /tmp/requirements/constraints.txt \
        sagemaker-training pyinstrument-cext
# Empty: torch from the default registry (CUDA build, runs on CPU too).
# https://download.pytorch.org/whl/cpu: the much smaller CPU-only build.
ARG TORCH_INDEX_URL=
# The bytecode pip compiles stays in the image: without it every process of every job compiles torch's modules
# again (importing the training code and smdebug took 8.4 s in a container without it, 3.7 s with it).
RUN if [ -f /tmp/build-ca/ca-bundle.crt ]; then export PIP_CERT=/tmp/build-ca/ca-bundle.crt; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -c /tmp/requirements/constraints.txt pip setuptools \
    && /opt/venv/bin/pip install --no-cache-dir --find-links /wheels \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -c /tmp/requirements/constraints.txt -r /tmp/requirements/train.txt

# ---- runtime -------------------------------------------------------------------
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
LABEL org.opencontainers.image.title="dogbreed-train" \
      org.opencontainers.image.description="SageMaker training image: train_model.py and hpo.py with smdebug"
# python3: the interpreter the venv runs on; ca-certificates: TLS to S3 and
# torchvision's weight download; tini: PID 1 that forwards SIGTERM (spot
# interruptions) to `train` and reaps DataLoader workers.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=venv /opt/venv /opt/venv
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
COPY src/training-image/train /opt/dogbreed/bin/train
COPY src/training-image/train_model.py src/training-image/hpo.py /opt/ml/code/
WORKDIR /opt/ml/code
# Runs as root: SageMaker mounts /opt/ml/{input,model,output,checkpoints}
# root-owned, and the training job must write to them.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["train"]
