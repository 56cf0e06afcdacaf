# ReMIND2Reg algorithm container (organisers' plain `docker run` and Grand Challenge), build context = repo root.
#   ./build.sh                     builds remind2reg-cet1 and remind2reg-t2 (and remind2reg with ALL=1)
#   docker build --build-arg SEQUENCES=ceT1 -t remind2reg-cet1 .
# Runs `python process.py` with no arguments: /input -> /output (see README.md, docs/CONTAINER.md).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Grand Challenge rejects images that run as root
RUN groupadd --system --gid 1000 user \
 && useradd --system --no-log-init --create-home --uid 1000 --gid user user \
 && mkdir -p /opt/app /input /output /opt/ml/model \
 && chown user:user /output

WORKDIR /opt/app
COPY requirements.txt /opt/app/requirements.txt
RUN python -m pip install --no-cache-dir -r /opt/app/requirements.txt

# only what process.py imports at run time (no simulation/, evaluation/, tests); config and any weights
# are baked from resources/ (a model tarball mounted at /opt/ml/model/ with config.json overrides them)
COPY process.py /opt/app/process.py
COPY interfaces/*.py /opt/app/interfaces/
COPY runner/*.py /opt/app/runner/
COPY model/ /opt/app/model/
COPY resources/ /opt/app/resources/

# OCI labels (build.sh fills them: VERSION from interfaces/version.py, REVISION and SOURCE from git).
# After the code, before SEQUENCES: a new commit changes only these metadata layers and the last one.
ARG VERSION=unknown
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="remind2reg" \
      org.opencontainers.image.description="ReMIND2Reg 2025: pre-operative MRI to post-resection iUS registration" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

# which MR sequences this image registers: ceT1 | T2 | all (baked in; REMIND2REG_SEQUENCES at run time).
# Declared last so the ceT1 and T2 images share every other layer.
ARG SEQUENCES=all
ENV REMIND2REG_SEQUENCES=${SEQUENCES}

USER user
ENTRYPOINT ["python", "/opt/app/process.py"]
