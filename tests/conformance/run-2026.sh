#!/usr/bin/env bash
# Run the server scenarios the MCP 2026-07-28 revision requires, from the official
# conformance suite (@modelcontextprotocol/conformance 0.2.0-alpha.12, installed into
# .testdeps/npm-conformance-2026 by scripts/install-test-deps.sh), against one
# Streamable HTTP endpoint, with the Node 22 from .testdeps.
#
#   tests/conformance/run-2026.sh URL [--scenario NAME]...
#
#   URL         e.g. http://127.0.0.1:3000/mcp/modern (a gateway endpoint whose backend
#               is tests/conformance/fixture_server_modern.py)
#   --scenario  run only these scenarios (repeatable), at the 2026-07-28 wire;
#               default: the suite's frozen requirement set (`--requirements 2026-07-28`:
#               the 37 required server scenarios, plus the ones it runs unscored)
#
# Prints one line per required scenario (PASS/FAIL, each failure's reason, warnings),
# one line listing the unscored scenarios (reported only, never counted), then
#   failed: NAME, NAME...                      (only when some failed)
#   conformance-json: {"suite":..,"passed":[..],"failed":[..],"skipped":[..],..}
#   conformance: P passed, F failed, S skipped (not run) of N scenarios run in T s
# where the counts are of required scenarios only ("skipped" = required but not run).
# Exits 0 only if every required scenario run passed; 2 on a usage error or when the
# suite is not installed.
#
# Env: CONFORMANCE_TIMEOUT  seconds the whole run may take (default 240)
#      CONFORMANCE_RESULTS  keep the suite's checks.json files and log in this dir
#      MCPGATE_TESTDEPS     where install-test-deps.sh put things (default <repo>/.testdeps)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
DEPS="${MCPGATE_TESTDEPS:-$ROOT/.testdeps}"
NODE="$DEPS/npm/node_modules/node/bin/node"
PKG="$DEPS/npm-conformance-2026/node_modules/@modelcontextprotocol/conformance"
CLI="$PKG/dist/index.js"
REVISION="2026-07-28"
TIMEOUT="${CONFORMANCE_TIMEOUT:-240}"

usage() { sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

URL=""
SCENARIOS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scenario) SCENARIOS+=("${2:?--scenario needs a value}"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "run-2026.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [[ -z "$URL" ]] || { echo "run-2026.sh: one URL only" >&2; exit 2; }; URL="$1"; shift ;;
  esac
done
[[ -n "$URL" ]] || { usage >&2; exit 2; }

if [[ ! -x "$NODE" || ! -f "$CLI" ]]; then
  echo "run-2026.sh: $NODE or $CLI is missing: run scripts/install-test-deps.sh" >&2
  exit 2
fi
NODE_VERSION="$("$NODE" --version)"
NODE_MAJOR="${NODE_VERSION#v}"; NODE_MAJOR="${NODE_MAJOR%%.*}"
if [[ ! "$NODE_MAJOR" =~ ^[0-9]+$ ]] || (( NODE_MAJOR < 22 )); then
  echo "run-2026.sh: the conformance suite needs Node.js >= 22, $NODE is $NODE_VERSION" >&2
  exit 2
fi
SUITE_VERSION="$("$NODE" -p "require('$PKG/package.json').version")"

if [[ -n "${CONFORMANCE_RESULTS:-}" ]]; then
  OUT="$CONFORMANCE_RESULTS"
  mkdir -p "$OUT"
else
  OUT="$(mktemp -d "${TMPDIR:-/tmp}/mcpgate-conformance-2026.XXXXXX")"
  trap 'rm -rf "$OUT"' EXIT
fi
LOG="$OUT/suite.log"
: >"$LOG"

# The frozen requirement set, from the suite itself: the server scenarios it requires,
# and the server scenarios it runs but never scores (extensions, pending ones).
"$NODE" "$CLI" list --server --requirements "$REVISION" >"$OUT/requirements.txt"
awk '/^Server scenarios/ {on = 1; next} /^[^ ]/ {on = 0} on && /^  - / {print $2}' \
  "$OUT/requirements.txt" >"$OUT/required.txt"
awk '/never scored/ {on = 1; next} on && /^ +- .*\[server\]$/ {print $2}' \
  "$OUT/requirements.txt" >"$OUT/not-scored.txt"
if [[ ! -s "$OUT/required.txt" ]]; then
  echo "run-2026.sh: could not read the $REVISION requirement set from the suite:" >&2
  sed 's/^/  | /' "$OUT/requirements.txt" >&2
  exit 2
fi

echo "conformance $SUITE_VERSION (node $NODE_VERSION), requirements $REVISION, against $URL"
START_MS=$(date +%s%3N)
status=0
# The suite writes into the current directory only through -o; run it from $OUT.
if [[ ${#SCENARIOS[@]} -eq 0 ]]; then
  (cd "$OUT" && timeout -k 5 "$TIMEOUT" "$NODE" "$CLI" server --url "$URL" --requirements "$REVISION" -o "$OUT") \
    >>"$LOG" 2>&1 || status=$?
else
  echo "scenarios: ${SCENARIOS[*]}"
  DEADLINE=$(( $(date +%s) + TIMEOUT ))
  for s in "${SCENARIOS[@]}"; do
    left=$(( DEADLINE - $(date +%s) ))
    (( left > 0 )) || { status=124; break; }
    echo "=== Running scenario: $s ===" >>"$LOG"
    (cd "$OUT" && timeout -k 5 "$left" "$NODE" "$CLI" server --url "$URL" --scenario "$s" \
      --spec-version "$REVISION" -o "$OUT") >>"$LOG" 2>&1 || status=$?
  done
fi
ELAPSED_MS=$(( $(date +%s%3N) - START_MS ))
SECONDS_TAKEN="$((ELAPSED_MS / 1000)).$(printf %03d $((ELAPSED_MS % 1000)))"

if [[ $status -eq 124 || $status -eq 137 ]]; then
  echo "ERROR: the suite did not finish within ${TIMEOUT}s (CONFORMANCE_TIMEOUT)"
fi
summary_status=0
"$NODE" "$HERE/summarize-2026.mjs" "$OUT" "$LOG" "$OUT/required.txt" "$OUT/not-scored.txt" \
  "$SECONDS_TAKEN" "$SUITE_VERSION" "$([[ ${#SCENARIOS[@]} -eq 0 ]] && echo requirements || echo selected)" \
  || summary_status=$?
if [[ $summary_status -eq 0 && $status -ne 0 ]]; then
  # Every required scenario passed by our reading, yet the suite itself failed: say why.
  echo "ERROR: the suite exited with status $status; its last lines:"
  tail -n 20 "$LOG" | sed 's/^/  | /'
  summary_status=1
fi
if [[ -n "${CONFORMANCE_RESULTS:-}" ]]; then
  echo "results and the suite's own log: $OUT"
fi
exit "$summary_status"
