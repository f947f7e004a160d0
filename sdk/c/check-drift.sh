#!/usr/bin/env bash
# Fails when wit/dataflow.wit changed since sdk/c/gen/ was generated, or when a generated file was edited
# by hand: run sdk/c/regen.sh then. Needs only sha256sum (no wit-bindgen), so CI can call it anywhere.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
stamp="$here/gen/STAMP"
[ -f "$stamp" ] || { echo "error: $stamp is missing; run sdk/c/regen.sh" >&2; exit 1; }
status=0
want_wit="$(awk '$1 == "wit" {print $2}' "$stamp")"
have_wit="$(sha256sum "$root/wit/dataflow.wit" | cut -d' ' -f1)"
if [ "$want_wit" != "$have_wit" ]; then
    echo "error: wit/dataflow.wit changed since the C bindings were generated (sha256 $have_wit, bindings from $want_wit); run sdk/c/regen.sh and commit sdk/c/gen" >&2
    status=1
fi
while read -r kind sum file; do
    [ "$kind" = "gen" ] || continue
    if [ ! -f "$here/gen/$file" ] || [ "$(sha256sum "$here/gen/$file" | cut -d' ' -f1)" != "$sum" ]; then
        echo "error: sdk/c/gen/$file differs from what regen.sh generated; run sdk/c/regen.sh" >&2
        status=1
    fi
done < "$stamp"
[ $status -eq 0 ] && echo "sdk/c/gen is up to date with wit/dataflow.wit"
exit $status
