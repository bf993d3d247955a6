#!/usr/bin/env bash
# On the GPU machine (device tool, after `bash benchmarks/gpu_prepare.sh` here):
#   run(command="MIXPRO_COMMIT=<commit> bash benchmarks/gpu_run.sh", carry=[".gpu"], timeout_s=600)
# Puts the CI-tested transformers first on the path (from .gpu/), then runs benchmarks/gpu_evidence.py with its
# results going to $OUT (what comes back). Extra arguments go to gpu_evidence.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-evidence-out}
mkdir -p "$OUT"
[ -f .gpu/cifar10/train.parquet ] || { echo "gpu_run: .gpu/cifar10 missing: run benchmarks/gpu_prepare.sh here and carry .gpu" >&2; exit 2; }
for name in transformers hub; do
  mkdir -p "/tmp/site-$name"
  [ -f ".gpu/site-$name.tar.xz" ] && tar -C "/tmp/site-$name" -xJf ".gpu/site-$name.tar.xz"
done
# The carried transformers with the image's huggingface_hub; with the carried hub; else the image's own.
chosen=unset
for path in /tmp/site-transformers /tmp/site-transformers:/tmp/site-hub ""; do
  if version=$(PYTHONPATH="$path" python3 -c "import transformers, mixpro_hf.step; print(transformers.__version__)" 2>/tmp/import.err); then
    chosen=$path
    break
  fi
  echo "gpu_run: PYTHONPATH='$path' does not import: $(tail -1 /tmp/import.err)"
done
[ "$chosen" != unset ] || { echo "gpu_run: transformers does not import" >&2; exit 2; }
export PYTHONPATH=$chosen PYTHONUNBUFFERED=1
echo "gpu_run: transformers $version (PYTHONPATH='$PYTHONPATH'); $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"
python3 benchmarks/gpu_evidence.py --out "$OUT" --data-dir .gpu/cifar10 "$@"
