#!/usr/bin/env bash
# Run the official MCP conformance suite's *server* scenarios
# (@modelcontextprotocol/conformance, installed by scripts/install-test-deps.sh)
# against one Streamable HTTP endpoint, with the Node 22 from .testdeps.
#
#   tests/conformance/run.sh URL [--suite active|all|pending] [--scenario NAME]...
#
#   URL         e.g. http://127.0.0.1:3000/mcp/conformance (a gateway endpoint whose
#               backend is tests/conformance/fixture_server.py)
#   --suite     which of the suite's server scenarios to run (default: active, i.e.
#               all but the ones the suite itself marks pending)
#   --scenario  run only these scenarios (repeatable); overrides --suite
#
# Prints one line per scenario (PASS/FAIL, each failure's reason, warnings), the
# scenarios not run, and a last line
#   conformance: P passed, F failed, S skipped (not run) of N scenarios run in T s
# Exits 0 only if every scenario run passed; 2 on a usage error or when the
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
PKG="$DEPS/npm/node_modules/@modelcontextprotocol/conformance"
CLI="$PKG/dist/index.js"
TIMEOUT="${CONFORMANCE_TIMEOUT:-240}"

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

URL=""
SUITE="active"
SCENARIOS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --suite) SUITE="${2:?--suite needs a value}"; shift 2 ;;
    --scenario) SCENARIOS+=("${2:?--scenario needs a value}"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) [[ -z "$URL" ]] || { echo "run.sh: one URL only" >&2; exit 2; }; URL="$1"; shift ;;
  esac
done
[[ -n "$URL" ]] || { usage >&2; exit 2; }

if [[ ! -x "$NODE" || ! -f "$CLI" ]]; then
  echo "run.sh: $NODE or $CLI is missing: run scripts/install-test-deps.sh" >&2
  exit 2
fi
NODE_VERSION="$("$NODE" --version)"
NODE_MAJOR="${NODE_VERSION#v}"; NODE_MAJOR="${NODE_MAJOR%%.*}"
if [[ ! "$NODE_MAJOR" =~ ^[0-9]+$ ]] || (( NODE_MAJOR < 22 )); then
  echo "run.sh: the conformance suite needs Node.js >= 22, $NODE is $NODE_VERSION" >&2
  exit 2
fi
SUITE_VERSION="$("$NODE" -p "require('$PKG/package.json').version")"

if [[ -n "${CONFORMANCE_RESULTS:-}" ]]; then
  OUT="$CONFORMANCE_RESULTS"
  mkdir -p "$OUT"
else
  OUT="$(mktemp -d "${TMPDIR:-/tmp}/mcpgate-conformance.XXXXXX")"
  trap 'rm -rf "$OUT"' EXIT
fi
LOG="$OUT/suite.log"
: >"$LOG"

# Every server scenario the suite knows, to report the ones not run.
"$NODE" "$CLI" list --server | sed -n 's/^  - \([^ ]*\).*/\1/p' >"$OUT/all-scenarios.txt"

echo "conformance $SUITE_VERSION (node $NODE_VERSION) against $URL"
START_MS=$(date +%s%3N)
status=0
# The suite writes into the current directory only through -o; run it from $OUT.
if [[ ${#SCENARIOS[@]} -eq 0 ]]; then
  echo "suite: $SUITE"
  (cd "$OUT" && timeout -k 5 "$TIMEOUT" "$NODE" "$CLI" server --url "$URL" --suite "$SUITE" -o "$OUT") \
    >>"$LOG" 2>&1 || status=$?
else
  echo "scenarios: ${SCENARIOS[*]}"
  echo "Running selected suite (${#SCENARIOS[@]} scenarios) against $URL" >>"$LOG"
  DEADLINE=$(( $(date +%s) + TIMEOUT ))
  for s in "${SCENARIOS[@]}"; do
    left=$(( DEADLINE - $(date +%s) ))
    (( left > 0 )) || { status=124; break; }
    echo "=== Running scenario: $s ===" >>"$LOG"
    (cd "$OUT" && timeout -k 5 "$left" "$NODE" "$CLI" server --url "$URL" --scenario "$s" -o "$OUT") \
      >>"$LOG" 2>&1 || status=$?
  done
fi
ELAPSED_MS=$(( $(date +%s%3N) - START_MS ))
SECONDS_TAKEN="$((ELAPSED_MS / 1000)).$(printf %03d $((ELAPSED_MS % 1000)))"

if [[ $status -eq 124 || $status -eq 137 ]]; then
  echo "ERROR: the suite did not finish within ${TIMEOUT}s (CONFORMANCE_TIMEOUT)"
fi
summary_status=0
"$NODE" "$HERE/summarize.mjs" "$OUT" "$LOG" "$OUT/all-scenarios.txt" "$SECONDS_TAKEN" || summary_status=$?
if [[ $summary_status -eq 0 && $status -ne 0 ]]; then
  # Every scenario passed by our reading, yet the suite itself failed: say why.
  echo "ERROR: the suite exited with status $status; its last lines:"
  tail -n 20 "$LOG" | sed 's/^/  | /'
  summary_status=1
fi
if [[ -n "${CONFORMANCE_RESULTS:-}" ]]; then
  echo "results and the suite's own log: $OUT"
fi
exit "$summary_status"
