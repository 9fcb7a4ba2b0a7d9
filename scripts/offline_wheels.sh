#!/usr/bin/env bash
# Wheels for a GPU machine that has CUDA torch, Triton, Lightning, PyG and transformers but no
# internet: the packages kizashi's benchmarks import that such an image lacks (polars, pydantic
# and theirs), at the versions installed here, and flash-linear-attention for the peer rows.
#
#   bash scripts/offline_wheels.sh [PYTHON_VERSION] [OUT_DIR] [FLA_DIR]   # defaults: 3.12 .whl .whl-fla
#
# then, on the GPU machine, from the repository root:
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl .whl-fla/*.whl
#   export PYTHONPATH=$PWD/src:$PWD/benchmarks:/tmp/site
#
# Versions come from .venv (make install) when it exists, else pip picks the newest allowed.
set -euo pipefail
python_version="${1:-3.12}"
out="${2:-.whl}"
fla_out="${3:-.whl-fla}"
packages=(polars polars-runtime-32 pydantic pydantic-core annotated-types typing-inspection)
fla=(flash-linear-attention==0.6.0 fla-core==0.6.0)

pinned=()
for name in "${packages[@]}"; do
    version=""
    if [ -x .venv/bin/python ]; then
        version="$(.venv/bin/python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"
    fi
    pinned+=("${name}${version:+==$version}")
done

platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
download() {
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
        --implementation cp "${platforms[@]}" -d "$@"
}
mkdir -p "$out" "$fla_out"
download "$out" "${pinned[@]}"
download "$fla_out" "${fla[@]}"
echo "wheels for Python $python_version:"
ls -1 "$out" "$fla_out"
du -sh "$out" "$fla_out"
