#!/usr/bin/env bash
# Here (no GPU needed): fill .gpu/, the one folder that travels with the GPU command (device tool: carry [".gpu"]).
#
#   .gpu/cifar10/{train,test}.parquet   CIFAR-10 from ../shared/data (55 MB; never committed: .git/info/exclude)
#   .gpu/site-transformers.tar.xz       the transformers that CI tests (the version in .venv), unpacked from its
#                                       wheel and xz-packed (13.5 MB as a wheel, ~4.4 MB so): the image has another
#   .gpu/site-hub.tar.xz                huggingface_hub 1.x, used there only if the image's is too old for it
#
# The GPU path needs neither `datasets` nor `evaluate` (benchmarks/cifar10.py reads the Parquet with pyarrow), so
# they are not carried. Everything that travels (working tree + .gpu) must stay under 64 MiB; this script checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$PWD/.venv/bin/python}
DATA=${MIXPRO_CIFAR10:-../shared/data/cifar10}
for f in train test; do
  [ -f "$DATA/$f.parquet" ] || { echo "gpu_prepare: $DATA/$f.parquet not found (set MIXPRO_CIFAR10)" >&2; exit 2; }
done
mkdir -p .git/info .gpu/cifar10
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
cp -u "$DATA/train.parquet" "$DATA/test.parquet" .gpu/cifar10/

pack() {  # pack NAME VERSION TARBALL: the py3.12 wheel of NAME==VERSION, unpacked, as tar.xz
  local name=$1 version=$2 tarball=$3 tmp
  if [ -f "$tarball" ] && [ "$(cat "$tarball.version" 2>/dev/null)" = "$name==$version" ]; then return; fi
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$tmp/wheel" "$name==$version"
  mkdir "$tmp/site"
  (cd "$tmp/site" && "$PY" -m zipfile -e "$tmp"/wheel/*.whl .)
  tar -C "$tmp/site" -cJf "$tarball" .
  echo "$name==$version" > "$tarball.version"
  rm -rf "$tmp"
}
pack transformers "$("$PY" -c 'import transformers; print(transformers.__version__)')" .gpu/site-transformers.tar.xz
pack huggingface_hub 1.33.0 .gpu/site-hub.tar.xz

tree_bytes=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
gpu_bytes=$(du -sb .gpu | cut -f1)
total=$((tree_bytes + gpu_bytes))
echo "gpu_prepare: working tree $((tree_bytes / 1048576)) MiB + .gpu $((gpu_bytes / 1048576)) MiB = $((total / 1048576)) MiB (limit 64)"
[ "$total" -lt $((64 * 1048576)) ] || { echo "gpu_prepare: over the 64 MiB that may travel" >&2; exit 1; }
echo "gpu_prepare: ready. Device tool: run(command=\"MIXPRO_COMMIT=$(git rev-parse --short HEAD) bash benchmarks/gpu_run.sh\", carry=[\".gpu\"], timeout_s=600)"
