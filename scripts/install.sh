#!/usr/bin/env bash
# Install Ponder from this checkout (README "Install"): `bash scripts/install.sh [EXTRAS]`,
# EXTRAS defaulting to cpu,test. On x86-64, llama.cpp (llama-cpp-python builds it from
# source) is built for any CPU with AVX2 rather than tuned to this one: the same kernels, so
# the same numbers, on every machine of a kind, and none of llama.cpp's AVX-512/AMX paths
# (its AMX matmul crashed on this project's AMX machines). Set CMAKE_ARGS to build otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-cpu,test}
x86=$([ "$(uname -m)" = x86_64 ] && echo 1 || echo 0)
if [ "$x86" = 1 ]; then
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
fi
python -m pip install -e ".[$extras]"
tuned() {  # llama.cpp built with AVX-512 or AMX (a wheel pip built earlier and reused)
  python -c 'import llama_cpp, sys; i = llama_cpp.llama_print_system_info().decode(); sys.exit(0 if "AVX512 = 1" in i or "AMX" in i else 1)' 2>/dev/null
}
if [ "$x86" = 1 ] && [ -z "${PONDER_KEEP_LLAMA_BUILD:-}" ] && tuned; then
  version=$(python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
  echo "rebuilding llama-cpp-python $version for any AVX2 CPU (pip reused a build tuned to this one)"
  python -m pip install --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$version"
fi
python -c 'import llama_cpp; print("llama.cpp build:", llama_cpp.llama_print_system_info().decode().strip())' 2>/dev/null || true
