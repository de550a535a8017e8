# Ponder on vLLM (GPU). Build from the repository root:
#   docker build -t ponder:gpu .
# The base image pins the vLLM version Ponder's `vllm` extra pins (tests check they agree).
FROM vllm/vllm-openai:v0.33.0

WORKDIR /opt/ponder
COPY pyproject.toml README.md ./
COPY server ./server
# The wheel carries the client package too (`ponder ask --url`, `ponder eval --url`).
COPY clients/python ./clients/python
# vLLM (and its torch) are already in the base image, so this adds only Ponder's own deps.
# The cache folder is created here, owned by `ponder`: a volume mounted on it (compose) or an
# emptyDir (Kubernetes, with fsGroup) then starts writable for the model download and vLLM's
# compile cache instead of root-owned.
RUN if command -v uv >/dev/null 2>&1; then uv pip install --system --no-cache ".[vllm]"; \
    else python3 -m pip install --no-cache-dir ".[vllm]"; fi \
 && useradd --create-home --uid 1000 ponder \
 && mkdir -p /home/ponder/.cache/huggingface /home/ponder/.cache/vllm \
 && chown -R ponder:ponder /home/ponder/.cache

USER ponder
ENV PONDER_ENGINE=vllm \
    PONDER_HOST=0.0.0.0 \
    PONDER_PORT=8000 \
    HF_HOME=/home/ponder/.cache/huggingface
EXPOSE 8000
# Ready only once the model has produced a token (loading a model can take minutes).
HEALTHCHECK --interval=15s --timeout=5s --start-period=900s --retries=3 \
  CMD python3 -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/ready', timeout=4).status != 200)"
# The base image's entrypoint is `vllm serve`; Ponder replaces it.
ENTRYPOINT ["ponder", "serve"]
CMD []
