#!/usr/bin/env bash
# Regenerates the C bindings in sdk/c/gen/ from wit/dataflow.wit (world `operator`) with wit-bindgen's C
# generator, and records what they were generated from in gen/STAMP (check-drift.sh compares it).
# Needs `wit-bindgen` 0.63.0 on PATH (or WIT_BINDGEN=<path>):
#   cargo install wit-bindgen-cli --version 0.63.0 --locked
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
wit_bindgen="${WIT_BINDGEN:-wit-bindgen}"
want="0.63.0"
version="$("$wit_bindgen" --version | awk '{print $2}')"
[ "$version" = "$want" ] || { echo "error: wit-bindgen $want wanted, found $version" >&2; exit 1; }

# The package file alone: wit/v0.1 holds the older version of the same package.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$root/wit/dataflow.wit" "$tmp/"
rm -rf "$here/gen"
mkdir -p "$here/gen"
"$wit_bindgen" c "$tmp" --world operator --out-dir "$here/gen" >/dev/null

{
    echo "# What sdk/c/gen/ was generated from (written by regen.sh, checked by check-drift.sh)."
    echo "wit-bindgen $version"
    echo "wit $(sha256sum "$root/wit/dataflow.wit" | cut -d' ' -f1)"
    (cd "$here/gen" && for f in operator.h operator.c operator_component_type.o; do
        echo "gen $(sha256sum "$f" | cut -d' ' -f1) $f"
    done)
} > "$here/gen/STAMP"
echo "regenerated sdk/c/gen from wit/dataflow.wit"
