#!/usr/bin/env bash
# The live-upgrade example, end to end with the `flumen` CLI only: sign and
# publish `pricing` 1.0.0, lock the job to it, run the job, publish and pull
# 2.0.0 while it runs, upgrade the operator live, then show which version
# wrote each committed part file (one per checkpoint epoch and sink subtask).
#
#   examples/live-upgrade/run.sh              from any directory
#   FLUMEN=/path/to/flumen WORK=/tmp/lu run.sh
#
# FLUMEN: the flumen command (default: `cargo run` of this checkout).
# WORK: where everything it makes goes (default: examples/live-upgrade/work):
# keys, trust file, local store, registry, built packages, the job's copy,
# its lockfile, output, checkpoints, control socket and log. Each run first
# removes what an earlier one left there. Needs componentize-py
# (sdk/install-toolchains.sh python).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
WORK="${WORK:-$here/work}"
if [ -n "${FLUMEN:-}" ]; then
    flumen=("$FLUMEN")
else
    flumen=(cargo run -q --manifest-path "$root/Cargo.toml" --)
fi
f() { "${flumen[@]}" "$@"; }

started=$SECONDS
step() { printf '\n[%3ss] == %s\n' "$((SECONDS - started))" "$*"; }

# Everything below reads and writes only $WORK: its own store and trust file,
# and no development shortcut that would admit unsigned packages.
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
rm -rf "${WORK:?}"/{keys,store,registry,build,packages,out,ck} \
    "$WORK"/{trust.toml,job.toml,flumen.lock,control.sock,run.log,run.out}
mkdir -p "$WORK/keys"
export FLUMEN_REGISTRY="$WORK/store" FLUMEN_TRUST="$WORK/trust.toml"
unset FLUMEN_ALLOW_UNSIGNED
registry="$WORK/registry"
socket="$WORK/control.sock"

if [ -z "${FLUMEN:-}" ]; then
    step "build flumen (cargo build; nothing to do when it is up to date)"
    cargo build -q --manifest-path "$root/Cargo.toml"
fi

step "a signing key, and a trust file that lets it sign \`pricing\`"
f plugin keygen --out "$WORK/keys/publisher" | sed -n 1p
cat >"$WORK/trust.toml" <<'EOF'
[[key]]
name = "publisher"
public_key = "keys/publisher.pub.pem"
packages = ["pricing"]
EOF

for v in 1 2; do
    step "build, package and sign pricing $v.0.0"
    f plugin build "$here/pricing-v$v" --out "$WORK/build/pricing-$v.wasm" | sed -n 1p
    f plugin package "$here/pricing-v$v" --component "$WORK/build/pricing-$v.wasm" \
        --out "$WORK/packages/pricing-$v.0.0" | sed -n 1p
    f plugin sign "$WORK/packages/pricing-$v.0.0" --key "$WORK/keys/publisher.pem"
done

step "publish 1.0.0 and lock the job: pricing@^1 → 1.0.0"
f plugin publish "$WORK/packages/pricing-1.0.0" --registry "$registry"
cp "$here/job.toml" "$WORK/job.toml"
f lock "$WORK/job.toml" --registry "$registry"

step "run the job in the background, with a control socket"
# Not through `f`: $! must be the job's own process (cargo run execs it), not a subshell.
"${flumen[@]}" run --quiet --control "$socket" "$WORK/job.toml" >"$WORK/run.out" 2>"$WORK/run.log" &
run_pid=$!
# Whatever happens below, the job does not outlive this script.
trap '[ -z "$run_pid" ] || kill "$run_pid" 2>/dev/null || true' EXIT
# Wait (a minute at most) for the socket and for 1.0.0's first committed part files.
for _ in $(seq 600); do
    if ! kill -0 "$run_pid" 2>/dev/null; then
        echo "error: the job ended before the upgrade; its log:" >&2
        cat "$WORK/run.log" >&2
        exit 1
    fi
    [ -S "$socket" ] && compgen -G "$WORK/out/part-*.jsonl" >/dev/null && break
    sleep 0.1
done
[ -S "$socket" ] || { echo "error: no control socket at $socket after a minute" >&2; exit 1; }
echo "running: $(find "$WORK/out" -name 'part-*.jsonl' | wc -l) part files committed so far"

step "publish 2.0.0, pull it into the local store, upgrade the running operator"
f plugin publish "$WORK/packages/pricing-2.0.0" --registry "$registry"
f plugin pull pricing@2.0.0 --registry "$registry"
if ! f job upgrade --control "$socket" --operator pricing --to pricing@2.0.0; then
    echo "error: the upgrade was not applied; the job's log:" >&2
    cat "$WORK/run.log" >&2
    exit 1
fi

step "wait for the job to finish"
status=0
wait "$run_pid" || status=$?
run_pid=""
if [ "$status" -ne 0 ]; then
    echo "error: the job failed (exit $status); its log:" >&2
    cat "$WORK/run.log" >&2
    exit 1
fi
grep -E '^(job|kind|source|operator|sink) ' "$WORK/run.out" || true

step "which version wrote each committed part file (part-<sink subtask>-<checkpoint>)"
generated="$(awk '/^rows *=/ { print $3; exit }' "$WORK/job.toml")"
shopt -s nullglob
parts=("$WORK"/out/part-*.jsonl)
[ ${#parts[@]} -gt 0 ] || { echo "error: no committed part files in $WORK/out" >&2; exit 1; }
awk -v generated="$generated" '
    {
        rows[FILENAME]++
        v = match($0, /"version":"[^"]*"/) ? substr($0, RSTART + 11, RLENGTH - 12) : "?"
        if (!((FILENAME, v) in seen)) {
            seen[FILENAME, v] = 1
            versions[FILENAME] = versions[FILENAME] (versions[FILENAME] == "" ? "" : "+") v
        }
        if (match($0, /"order_id":[0-9]+/)) ids[substr($0, RSTART + 11, RLENGTH - 11)]++
    }
    END {
        printf "%-30s %6s  %s\n", "part file", "rows", "version"
        for (i = 1; i < ARGC; i++) {
            name = ARGV[i]; sub(/.*\//, "", name); split(name, field, "-")
            v = (ARGV[i] in versions) ? versions[ARGV[i]] : "(no rows)"
            key = field[2] " " v
            if (key != last) { flush(); last = key }
            line[++len] = sprintf("%-30s %6d  %s", name, rows[ARGV[i]], v)
            # Per sink subtask: how many epochs in a row each version wrote.
            s = field[2]
            if (!(s in order)) { order[s] = ++subtasks; sub_of[subtasks] = s }
            if (runs[s] == 0 || v != run_version[s, runs[s]]) run_version[s, ++runs[s]] = v
            run_epochs[s, runs[s]]++
        }
        flush()
        print ""
        for (k = 1; k <= subtasks; k++) {
            s = sub_of[k]
            printf "sink subtask %s: ", s
            for (r = 1; r <= runs[s]; r++)
                printf "%s%d epochs by %s", (r > 1 ? ", then " : ""), run_epochs[s, r], run_version[s, r]
            print ""
        }
        for (id in ids) { distinct++; if (ids[id] > 1) repeated++ }
        printf "rows: %d committed, %d distinct order ids of %d generated, %d repeated\n", NR, distinct, generated, repeated
    }
    # Prints a run of part files of one subtask and version: its first and last two, the rest elided.
    function flush(  i) {
        for (i = 1; i <= len; i++)
            if (len <= 5 || i <= 2 || i > len - 2) print line[i]
            else if (i == 3) printf "  ... %d more\n", len - 4
        len = 0
    }' "${parts[@]}"
echo "done in $((SECONDS - started)) s"
