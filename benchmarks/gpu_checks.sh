#!/usr/bin/env bash
# The checks that need a GPU, in one run (CI has none): the engine's and the identity's tests on
# the GPU, then the transfer benchmark at 512 px, 500 steps, against PyTorch on the same GPU.
#
#     bash benchmarks/gpu_checks.sh [OUTPUT_FOLDER]     # from the repository root
#
# Uses the Python environment it finds (jax with CUDA, flax, optax, torch); mmdstyle is imported
# from the working tree. Logs and the benchmark's JSON go to OUTPUT_FOLDER (default /tmp/gpu-checks).
set -uo pipefail
output="${1:-/tmp/gpu-checks}"
mkdir -p "$output"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# float64 identities and the engine on the GPU; the suite's own options minus xdist and jaxtyping's hook
JAX_PLATFORMS=cuda timeout 200 python3 -m pytest -q -o addopts="" -p no:cacheprovider --durations=5 \
  tests/test_lbfgs.py tests/test_losses.py tests/test_mmd.py tests/test_verification.py tests/test_transfer.py \
  2>&1 | tee "$output/tests.log" | tail -25

timeout 300 python3 benchmarks/bench_transfer.py --platform gpu --size 512 --steps 500 --quality-steps 100 \
  --json "$output/bench_transfer_gpu.json" 2>&1 | tee "$output/bench_transfer_gpu.log"
