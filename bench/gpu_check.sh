#!/usr/bin/env bash
# The CUDA checks, for the GPU machine (torch 2.11 preinstalled there; no Streamlit, Visdom or Chromium).
# Run from the repo root:  bash bench/gpu_check.sh [DIR]   (at most 5 minutes: each step has its timeout)
# It writes into DIR (default bench/results/): the report's CUDA part as cuda-<gpu>.json and .md
# (bench/report.py; the rows that need Visdom, Streamlit or Chromium say "skipped"), and gpu_check.log,
# everything it printed, the tests' results included.
set -uo pipefail
# That machine has no .venv and no editable install of this project: PYTHONPATH stands in for it.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
DIR=${1:-bench/results}
mkdir -p "$DIR"
LOG="$DIR/gpu_check.log"
{
  date
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  # 1. every CUDA test: tests/test_engine_cuda.py, and the tests elsewhere whose id or marker names cuda (the
  #    CUDA out-of-memory fault, the lecture's programs on cuda, anything marked @pytest.mark.cuda), in the
  #    files that need neither Streamlit nor Visdom (that machine has neither)
  FILES=$(grep -l -i cuda tests/test_*.py | xargs grep -L -E "^(import|from) (streamlit|visdom|dashboard|playwright)")
  echo "CUDA tests in: $FILES"
  timeout 100 python3 -m pytest -q -rs -p no:cacheprovider -k cuda $FILES
  echo "pytest exit status $?"
  # 2. the report's CUDA part, shortened to fit: the start-up rows take 4 launches a side, the memory row 20 s
  BENCH_CHUNK_S=0.3 BENCH_MEMORY_S=20 BENCH_START_ROUNDS=4 timeout 180 python3 bench/report.py --device cuda \
    --sections engine,precision,fast,store,start,memory,visdom,refresh,compile --out "$DIR"
  echo "report exit status $?"
  date
} 2>&1 | tee "$LOG"
