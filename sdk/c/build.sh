#!/usr/bin/env bash
# Builds a C operator (a plugin directory with plugin.toml and *.c files) into a Flumen component:
# compile with clang-16 for wasm32-wasi with the SDK and the generated bindings, wrap the core module
# into a component, validate it, and check it imports only `output` and plugin.toml's capabilities.
# Usage: sdk/c/build.sh <plugin-dir> <out.wasm>
# Tools: CC (default clang-16), WASM_TOOLS (default: on PATH, else target/sdk-tools/python/bin/wasm-tools
# as sdk/install-toolchains.sh installs it).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 <plugin-dir> <out.wasm>" >&2; exit 2; }
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
plugin="$(cd "$1" && pwd)"
out="$2"
cc="${CC:-clang-16}"
wasm_tools="${WASM_TOOLS:-}"
if [ -z "$wasm_tools" ]; then
    if command -v wasm-tools >/dev/null; then wasm_tools=wasm-tools
    else wasm_tools="$root/target/sdk-tools/python/bin/wasm-tools"; fi
fi
command -v "$cc" >/dev/null || { echo "error: $cc not found (sdk/install-toolchains.sh c)" >&2; exit 1; }
[ -x "$(command -v "$wasm_tools")" ] || { echo "error: wasm-tools not found (sdk/install-toolchains.sh python)" >&2; exit 1; }

# plugin.toml: `name = "..."` and `capabilities = [...]` (one line each; default ["log"]).
toml="$plugin/plugin.toml"
[ -f "$toml" ] || { echo "error: $toml is missing" >&2; exit 1; }
name="$(sed -n 's/^[[:space:]]*name[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$toml" | head -n1)"
[ -n "$name" ] || { echo "error: $toml has no name" >&2; exit 1; }
if grep -q '^[[:space:]]*capabilities[[:space:]]*=' "$toml"; then
    caps="$(sed -n 's/^[[:space:]]*capabilities[[:space:]]*=[[:space:]]*\[\([^]]*\)\].*/\1/p' "$toml" | tr -d '" ' | tr ',' ' ')"
else
    caps="log"
fi
for c in $caps; do
    case "$c" in log|state|blobs|inference) ;; *) echo "error: $toml: unknown capability \`$c\`" >&2; exit 1 ;; esac
done
sources=("$plugin"/*.c)
[ -f "${sources[0]}" ] || { echo "error: no *.c files in $plugin" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$cc" --target=wasm32-wasi -O2 -flto -mexec-model=reactor -Wl,--strip-debug \
    -Wall -Wextra -Wno-unused-parameter \
    -I "$here" -I "$here/gen" "-DFLUMEN_OPERATOR_NAME=\"$name\"" \
    -o "$tmp/core.wasm" \
    "${sources[@]}" "$here/flumen.c" "$here/gen/operator.c" "$here/gen/operator_component_type.o"
"$wasm_tools" component new "$tmp/core.wasm" -o "$out"
"$wasm_tools" validate --features all "$out"

# Imports: only output (and the types it uses) plus the granted capabilities.
imports="$("$wasm_tools" component wit "$out" | sed -n 's/^[[:space:]]*import flumen:dataflow\/\([a-z-]*\)@.*/\1/p' | sort -u)"
bad=""
for i in $imports; do
    case " types output $caps " in *" $i "*) ;; *) bad="$bad $i" ;; esac
done
echo "$name: $(wc -c < "$out") bytes, imports: $(echo $imports)"
if [ -n "$bad" ]; then
    echo "error: $out imports$bad, not in plugin.toml's capabilities ($caps)" >&2
    exit 1
fi
