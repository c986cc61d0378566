#!/usr/bin/env bash
# Install the non-Cargo test dependencies of mcpgate into .testdeps/ (gitignored).
#
#   .testdeps/py-mcp1/   Python venv with the MCP Python SDK 1.x  (pip 'mcp==1.*')
#   .testdeps/py-mcp2/   Python venv with the MCP Python SDK 2.x  (pip 'mcp==2.*')
#   .testdeps/py-k8s/    Python venv with kubernetes-validate 1.x, which checks
#                        deploy/kubernetes/ against the bundled Kubernetes schemas
#   .testdeps/py-time/   Python venv with the reference server mcp-server-time 2026.x
#                        (pip 'mcp-server-time==2026.*'), a backend of the benchmark's
#                        new-session scenario
#   .testdeps/npm/       npm prefix with the reference MCP servers (everything, memory,
#                        filesystem), the official
#                        conformance suite (@modelcontextprotocol/conformance 0.1.x, run by
#                        tests/conformance/run.sh), the TypeScript SDK 1.x (driven by
#                        tests/clients/ts_client.mjs) and a Node 22 binary (npm package
#                        `node`, major 22; the host node may be older)
#   groff                (Debian's groff-base, system-wide, only if missing: the man page
#                        test renders the page)
#   nginx                (Debian's nginx-light, system-wide, only if missing: the
#                        scale-out tests put a real nginx in front of two gateways)
#   chromium             (Debian's, system-wide, only if missing: the status page's
#                        test drives it headless)
#   .testdeps/npm-inspector/
#                        npm prefix with the MCP Inspector 2.x, for its CLI (run with the
#                        Node 22 above by the tests)
#   .testdeps/npm-oidc/  npm prefix with oidc-provider 9.x (and jose 6.x, which it uses
#                        too), the authorization server tests/oauth/issuer.mjs runs
#                        for the OAuth tests (with the Node 22 above)
#   .testdeps/npm-conformance-2026/
#                        npm prefix with the conformance suite 0.2.0-alpha.12, exactly,
#                        whose scenarios cover the 2026-07-28 revision (run with the
#                        Node 22 above by tests/conformance/run-2026.sh)
#
# Idempotent: each component has a stamp file holding the spec it was installed
# from; a component is reinstalled from scratch only when its stamp is missing or
# differs, or its installed files fail a quick check. With everything present a
# run takes well under a second. Needs PyPI, the npm registry and (only when groff
# or nginx is missing) Debian's package archive.
#
# Usage: scripts/install-test-deps.sh [--force]
# Env:   MCPGATE_TESTDEPS  target dir (default: <repo>/.testdeps)
#        PYTHON            interpreter used to create the venvs (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${MCPGATE_TESTDEPS:-$ROOT/.testdeps}"
PYTHON="${PYTHON:-python3}"
FORCE=0

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-test-deps: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

# ---- what gets installed (majors pinned; the conformance prerelease exactly) -
PY_MCP1_SPEC='mcp==1.*'
PY_MCP2_SPEC='mcp==2.*'
PY_K8S_SPEC='kubernetes-validate==1.*'
# Versioned by date (YYYY.M.D), like the npm reference servers: the "major" is a year.
PY_TIME_SPEC='mcp-server-time==2026.*'
# The reference servers are versioned by date (YYYY.M.D), so their "major" is a year.
NPM_DEPS=(
  '@modelcontextprotocol/server-everything=2026'
  '@modelcontextprotocol/server-memory=2026'
  # Started with no directory, it serves the roots its client gives it.
  '@modelcontextprotocol/server-filesystem=2026'
  # The TypeScript SDK's client, driven by tests/clients/ts_client.mjs.
  '@modelcontextprotocol/sdk=1'
  # 0.x: pin major.minor (0.2 alphas exist and are not picked by a plain "0.1").
  '@modelcontextprotocol/conformance=0.1'
  'node=22'
)
# The 2026-07-28 scenarios exist only in the 0.2 prereleases, which change from one
# alpha to the next: pinned exactly, in a prefix of their own, so the 0.1 suite above
# (and the scenario counts its test expects) stays as it is.
NPM_CONFORMANCE_2026_DEPS=(
  '@modelcontextprotocol/conformance=0.2.0-alpha.12'
)
# A real OpenID Connect / OAuth 2.1 authorization server for the OAuth tests
# (tests/oauth/issuer.mjs), and the JOSE library it is built on, with which the
# script signs the tokens it crafts.
NPM_OIDC_DEPS=(
  'oidc-provider=9'
  'jose=6'
)
# The MCP Inspector, for its CLI (a large package: a prefix of its own, so the
# others above do not reinstall with it).
NPM_INSPECTOR_DEPS=(
  '@modelcontextprotocol/inspector=2'
)

# ---- helpers ---------------------------------------------------------------
log() { echo "install-test-deps: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

START_MS=$(date +%s%3N)
SUMMARY=()

mkdir -p "$DEPS"
# Serialize concurrent runs (e.g. several test processes bootstrapping at once).
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DEPS/.lock"
  flock 9
fi

# stamp_ok FILE EXPECTED -> 0 when FILE exists with exactly EXPECTED content.
stamp_ok() {
  [[ $FORCE -eq 0 && -f "$1" ]] && [[ "$(cat "$1")" == "$2" ]]
}

# ---- Python venvs ----------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"
PY_ID="$("$PYTHON" -c 'import sys, os; print(os.path.realpath(sys.executable), sys.version.split()[0])')"

make_venv() {
  local venv="$1"
  # Debian's python3 without the python3-venv package has no ensurepip; then build
  # the venv without pip and put pip into it with the host pip (pip >= 22.3 --python).
  if ! "$PYTHON" -m venv "$venv" >/dev/null 2>"$DEPS/venv.err"; then
    log "python3 -m venv failed ($(tail -n1 "$DEPS/venv.err")); retrying --without-pip"
    rm -rf "$venv"
    "$PYTHON" -m venv --without-pip "$venv"
    "$PYTHON" -m pip --python "$venv/bin/python" install --quiet --no-input pip \
      || die "cannot bootstrap pip into $venv (install python3-venv, or a pip >= 22.3)"
  fi
  rm -f "$DEPS/venv.err"
}

# install_py NAME SPEC [DIST MODULE]: a venv at $DEPS/NAME holding SPEC, whose
# distribution DIST (default mcp) is importable as MODULE (default mcp).
install_py() {
  local name="$1" spec="$2" dist="${3:-mcp}" module="${4:-mcp}"
  local venv="$DEPS/$name" stamp="$DEPS/$name/.mcpgate-stamp"
  local want="spec=$spec python=$PY_ID"
  local state="cached" ver
  local getver="import importlib.metadata as m; print(m.version('$dist'))"
  if ! stamp_ok "$stamp" "$want" || ! ver="$("$venv/bin/python" -c "$getver" 2>/dev/null)"; then
    state="installed"
    log "$name: installing '$spec' ..."
    rm -rf "$venv"
    make_venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install \
      --quiet --no-input --progress-bar off "$spec"
    "$venv/bin/python" -c "import $module" || die "$name: 'import $module' fails after install"
    printf '%s' "$want" >"$stamp"
    ver="$("$venv/bin/python" -c "$getver")"
  fi
  log "$name: $dist $ver ($state) -> $venv/bin/python"
  SUMMARY+=("$name $dist $ver")
}

install_py py-mcp1 "$PY_MCP1_SPEC"
install_py py-mcp2 "$PY_MCP2_SPEC"
# The Kubernetes manifests' schema check (tests/cases/scale_out.rs): the schemas
# of every Kubernetes release ship inside the package, so it runs offline.
install_py py-k8s "$PY_K8S_SPEC" kubernetes-validate kubernetes_validate
# A Python backend for the benchmark's new-session scenario (bench/src/fresh.rs).
install_py py-time "$PY_TIME_SPEC" mcp-server-time mcp_server_time

# ---- npm -------------------------------------------------------------------
command -v npm >/dev/null 2>&1 || die "npm not found"
NPM_DIR="$DEPS/npm"
NPM_STAMP="$NPM_DIR/.mcpgate-stamp"

# package.json is generated here from NPM_DEPS, so this script is the single place
# where the test dependencies are spelled; the stamp is that exact package.json.
# gen_package_json NAME SPEC... (each SPEC is package=range)
gen_package_json() {
  local pkg_name="$1" i name range sep=""
  shift
  printf '{\n  "name": "%s",\n  "private": true,\n  "description": "generated by scripts/install-test-deps.sh; do not edit",\n  "dependencies": {\n' "$pkg_name"
  for i in "$@"; do
    name="${i%=*}"; range="${i##*=}"
    printf '%s    "%s": "%s"' "$sep" "$name" "$range"
    sep=$',\n'
  done
  printf '\n  }\n}\n'
}
PKG_JSON="$(gen_package_json mcpgate-testdeps "${NPM_DEPS[@]}")"

NODE22="$NPM_DIR/node_modules/node/bin/node"
npm_ok() {
  [[ -x "$NODE22" ]] && "$NODE22" --version 2>/dev/null | grep -q '^v22\.' &&
  [[ -f "$NPM_DIR/node_modules/@modelcontextprotocol/server-everything/package.json" ]] &&
  [[ -f "$NPM_DIR/node_modules/@modelcontextprotocol/server-memory/package.json" ]] &&
  [[ -f "$NPM_DIR/node_modules/@modelcontextprotocol/server-filesystem/package.json" ]] &&
  [[ -f "$NPM_DIR/node_modules/@modelcontextprotocol/conformance/package.json" ]] &&
  [[ -f "$NPM_DIR/node_modules/@modelcontextprotocol/sdk/dist/esm/client/streamableHttp.js" ]]
}

npm_state="cached"
if ! stamp_ok "$NPM_STAMP" "$PKG_JSON" || ! npm_ok; then
  npm_state="installed"
  log "npm: installing $(printf '%s ' "${NPM_DEPS[@]}")..."
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  printf '%s' "$PKG_JSON" >"$NPM_DIR/package.json"
  # No TTY on CI: no progress, audit or funding chatter. The `node` package's
  # preinstall fetches node-linux-<arch>@22 from the npm registry (no other host).
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --no-progress \
    --no-update-notifier --loglevel=error >&2
  npm_ok || die "npm: install finished but node@22, the servers or the conformance suite are missing"
  printf '%s' "$PKG_JSON" >"$NPM_STAMP"
fi

# pkg_version PACKAGE [PREFIX]
pkg_version() {
  "$NODE22" -p "require('${2:-$NPM_DIR}/node_modules/$1/package.json').version"
}
NODE22_VER="$("$NODE22" --version)"
EVERYTHING_VER="$(pkg_version @modelcontextprotocol/server-everything)"
MEMORY_VER="$(pkg_version @modelcontextprotocol/server-memory)"
FILESYSTEM_VER="$(pkg_version @modelcontextprotocol/server-filesystem)"
CONFORMANCE_VER="$(pkg_version @modelcontextprotocol/conformance)"
SDK_VER="$(pkg_version @modelcontextprotocol/sdk)"
log "npm: node $NODE22_VER -> $NODE22 ($npm_state)"
log "npm: @modelcontextprotocol/server-everything $EVERYTHING_VER -> $NPM_DIR/node_modules/.bin/mcp-server-everything"
log "npm: @modelcontextprotocol/server-memory $MEMORY_VER -> $NPM_DIR/node_modules/.bin/mcp-server-memory"
log "npm: @modelcontextprotocol/server-filesystem $FILESYSTEM_VER -> $NPM_DIR/node_modules/.bin/mcp-server-filesystem"
log "npm: @modelcontextprotocol/conformance $CONFORMANCE_VER -> $NPM_DIR/node_modules/.bin/conformance"
log "npm: @modelcontextprotocol/sdk $SDK_VER -> $NPM_DIR/node_modules/@modelcontextprotocol/sdk"
SUMMARY+=("node $NODE22_VER" "server-everything $EVERYTHING_VER" "server-memory $MEMORY_VER"
  "server-filesystem $FILESYSTEM_VER"
  "conformance $CONFORMANCE_VER" "typescript sdk $SDK_VER")

# npm_prefix_install DIR PACKAGE_JSON OK_FUNCTION WHAT [NPM_FLAG...]
# A prefix of its own for WHAT: installed from scratch from PACKAGE_JSON unless
# its stamp is that very package.json and OK_FUNCTION passes; sets
# prefix_state to "cached" or "installed". These packages want Node >= 22 to
# run (the Node 22 above runs them), not to install: the host npm may be on an
# older node, hence --engine-strict=false (the default, made explicit).
npm_prefix_install() {
  local dir="$1" json="$2" ok="$3" what="$4"
  shift 4
  prefix_state="cached"
  if stamp_ok "$dir/.mcpgate-stamp" "$json" && "$ok"; then
    return
  fi
  prefix_state="installed"
  log "npm: installing $what into $dir ..."
  rm -rf "$dir"
  mkdir -p "$dir"
  printf '%s' "$json" >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --no-progress \
    --no-update-notifier --engine-strict=false --loglevel=error "$@" >&2
  "$ok" || die "npm: install finished but $what fails its check in $dir"
  printf '%s' "$json" >"$dir/.mcpgate-stamp"
}

# ---- npm: the 2026-07-28 conformance suite ---------------------------------
CONF26_DIR="$DEPS/npm-conformance-2026"
CONF26_PKG=@modelcontextprotocol/conformance
CONF26_WANT="${NPM_CONFORMANCE_2026_DEPS[0]##*=}"

conf26_ok() {
  [[ -f "$CONF26_DIR/node_modules/$CONF26_PKG/dist/index.js" ]] &&
  [[ "$(pkg_version "$CONF26_PKG" "$CONF26_DIR" 2>/dev/null)" == "$CONF26_WANT" ]]
}

npm_prefix_install "$CONF26_DIR" \
  "$(gen_package_json mcpgate-testdeps-conformance-2026 "${NPM_CONFORMANCE_2026_DEPS[@]}")" \
  conf26_ok "$CONF26_PKG $CONF26_WANT"
CONF26_VER="$(pkg_version "$CONF26_PKG" "$CONF26_DIR")"
log "npm: $CONF26_PKG $CONF26_VER ($prefix_state) -> $CONF26_DIR/node_modules/$CONF26_PKG/dist/index.js"
SUMMARY+=("conformance-2026 $CONF26_VER")

# ---- npm: the MCP Inspector (its CLI) ---------------------------------------
INSPECTOR_DIR="$DEPS/npm-inspector"
INSPECTOR_PKG=@modelcontextprotocol/inspector
INSPECTOR_CLI="$INSPECTOR_DIR/node_modules/$INSPECTOR_PKG/clients/launcher/build/index.js"

inspector_ok() {
  [[ -f "$INSPECTOR_CLI" ]] && "$NODE22" "$INSPECTOR_CLI" --version >/dev/null 2>&1
}

# Its postinstall fetches the web and terminal clients, which the CLI does not
# need: scripts are not run.
npm_prefix_install "$INSPECTOR_DIR" \
  "$(gen_package_json mcpgate-testdeps-inspector "${NPM_INSPECTOR_DEPS[@]}")" \
  inspector_ok "the $INSPECTOR_PKG CLI" --ignore-scripts
INSPECTOR_VER="$(pkg_version "$INSPECTOR_PKG" "$INSPECTOR_DIR")"
log "npm: $INSPECTOR_PKG $INSPECTOR_VER ($prefix_state) -> $INSPECTOR_CLI"
SUMMARY+=("inspector $INSPECTOR_VER")

# ---- npm: oidc-provider (the OAuth tests' authorization server) --------------
OIDC_DIR="$DEPS/npm-oidc"

oidc_ok() {
  [[ -f "$OIDC_DIR/node_modules/oidc-provider/package.json" ]] &&
  [[ -f "$OIDC_DIR/node_modules/jose/package.json" ]] &&
  "$NODE22" --input-type=module -e "await import('$OIDC_DIR/node_modules/oidc-provider/lib/index.js')" >/dev/null 2>&1
}

npm_prefix_install "$OIDC_DIR" \
  "$(gen_package_json mcpgate-testdeps-oidc "${NPM_OIDC_DEPS[@]}")" \
  oidc_ok "oidc-provider"
OIDC_VER="$(pkg_version oidc-provider "$OIDC_DIR")"
log "npm: oidc-provider $OIDC_VER ($prefix_state) -> $OIDC_DIR/node_modules/oidc-provider"
SUMMARY+=("oidc-provider $OIDC_VER")

# ---- Debian packages, installed system-wide only when missing ---------------
SUDO=""
[[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
APT_UPDATED=0
# apt_install LABEL PACKAGE: installs PACKAGE from Debian's archive (the package
# lists are fetched once per run).
apt_install() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    $SUDO apt-get update -qq >&2 || die "$1: apt-get update failed"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$2" >&2 \
    || die "$1: apt-get install $2 failed"
}

# ---- groff (Debian's groff-base): the man page test renders the page --------
if command -v groff >/dev/null 2>&1; then
  log "groff: $(groff --version | head -n 1) (present)"
else
  log "groff: installing Debian's groff-base ..."
  apt_install groff groff-base
  command -v groff >/dev/null 2>&1 || die "groff: installed but not on PATH"
fi
SUMMARY+=("groff")

# ---- nginx (Debian's nginx-light): the scale-out tests put it in front of two ---
# gateways (tests/cases/scale_out.rs, deploy/nginx/mcpgate.conf). The tests start
# their own nginx as the current user, with its config and temp files in a temp
# dir; the package's own service is not used, so if installing started it (Debian
# starts it unless policy-rc.d forbids, as in most containers) it is stopped again:
# with systemd by systemctl, otherwise by the pid in the package's pid file.
NGINX_BIN="$(command -v nginx 2>/dev/null || true)"
[[ -n "$NGINX_BIN" || ! -x /usr/sbin/nginx ]] || NGINX_BIN=/usr/sbin/nginx
if [[ -n "$NGINX_BIN" ]]; then
  log "nginx: $("$NGINX_BIN" -v 2>&1 | head -n 1) at $NGINX_BIN (present)"
else
  log "nginx: installing Debian's nginx-light ..."
  apt_install nginx nginx-light
  [[ -x /usr/sbin/nginx ]] || die "nginx: installed but /usr/sbin/nginx is missing"
  if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
    $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
  elif [[ -s /run/nginx.pid ]]; then
    $SUDO /usr/sbin/nginx -s quit >/dev/null 2>&1 || true
  fi
  log "nginx: $(/usr/sbin/nginx -v 2>&1 | head -n 1) (installed)"
fi
SUMMARY+=("nginx")

# ---- chromium (Debian's): the status page's test drives it headless ----------
# (tests/common/browser.rs runs /usr/lib/chromium/chromium, the browser behind
# Debian's /usr/bin/chromium wrapper, over --remote-debugging-pipe.)
CHROMIUM_BIN=/usr/lib/chromium/chromium
if [[ -x "$CHROMIUM_BIN" ]]; then
  log "chromium: $("$CHROMIUM_BIN" --version 2>/dev/null | head -n 1) (present)"
else
  log "chromium: installing Debian's chromium ..."
  apt_install chromium chromium
  [[ -x "$CHROMIUM_BIN" ]] || die "chromium: installed but $CHROMIUM_BIN is missing"
  log "chromium: $("$CHROMIUM_BIN" --version 2>/dev/null | head -n 1) (installed)"
fi
SUMMARY+=("chromium")

# ---- one-line summary on stdout --------------------------------------------
summary="$(printf '%s, ' "${SUMMARY[@]}")"
elapsed_ms=$(( $(date +%s%3N) - START_MS ))
echo "install-test-deps: OK in $((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))s: ${summary%, } (in $DEPS)"
