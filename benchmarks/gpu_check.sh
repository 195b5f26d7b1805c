#!/usr/bin/env bash
# The GPU checks in one run (about 5 minutes on one H200): the whole test
# suite on CUDA, tutorials included, then the GPU throughput table (the
# default, which on a GPU is `vectorize_tasks=True`, and `jit_compile=True`,
# beside the PyTorch loop and vmap references). For a machine with PyTorch but without
# Keras and no network: download the wheels here first, e.g.
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
#     keras==3.15.1 namex==0.1.0 optree==0.20.0
# and carry `.whl` with the checkout. Outputs go to $OUT (default: gpu_check/).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export KERAS_BACKEND=torch PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, keras; print('torch', torch.__version__, 'keras', keras.__version__)"
# -P: a benchmark file named like a standard module must not shadow it.
timeout 220 python3 -m pytest tests -q -n 14 --tb=short -p no:cacheprovider \
  -W ignore::DeprecationWarning >"$OUT/suite.txt" 2>&1
echo "pytest rc=$?"
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/suite.txt" | tail -20
timeout 200 python3 -P benchmarks/throughput.py --device cuda --seconds 1.5 --rounds 1 \
  --impls metakeras metakeras-graph torch torch-vmap >"$OUT/bench.txt" 2>&1
echo "bench rc=$?"
cp benchmarks/results/throughput_cuda.csv "$OUT/" 2>/dev/null
grep -E "error|note" "$OUT/bench.txt" | head -5
tail -20 "$OUT/bench.txt"
