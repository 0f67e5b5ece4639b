#!/usr/bin/env bash
# The CUDA checks, for the GPU machine (torch 2.11 preinstalled there; no Streamlit or Visdom).
# Run from the repo root:  bash bench/gpu_check.sh   (about 5 minutes on one H100)
set -uo pipefail
# That machine has no .venv and no editable install of this project: PYTHONPATH stands in for it.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# 1. the CUDA tests (engine only: the dashboard and Visdom tests need packages absent there)
timeout 240 python3 -m pytest -q -rs tests/test_engine_cuda.py 2>&1 | tee "$OUT/cuda_tests.txt"
# 2. the engine against the bare lecture loops, interleaved, on CUDA
timeout 300 python3 bench/bench_engine.py --device cuda --rounds 8 2>&1 | tee "$OUT/bench_cuda.txt"
