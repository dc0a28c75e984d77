# What the tests and the benchmarks need, installed once per machine and
# skipped when already there: sourced by test.sh and bench/run (bash).
# Debian packages (apt-get), cargo-nextest and the Garage S3 server (crates
# registry), pypiserver and uv in a venv (PyPI), verdaccio (npm registry).

log() { printf '\n== %s\n' "$*"; }

install_apt() {
  local missing=()
  [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  # Server programs for the private PostgreSQL of the backend fault tests.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v rpmbuild >/dev/null 2>&1 || missing+=(rpm)
  command -v createrepo_c >/dev/null 2>&1 || missing+=(createrepo-c)
  command -v dnf >/dev/null 2>&1 || missing+=(dnf)
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  # The registry mirror: an upstream registry and two real clients.
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
  command -v containerd >/dev/null 2>&1 || missing+=(containerd)
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  # The Go module proxy's client.
  command -v go >/dev/null 2>&1 || missing+=(golang-go)
  # The Maven client, a compiler for it, and the plugins a jar's lifecycle
  # uses (their artifacts, under /usr/share/maven-repo, are the test's upstream).
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
  for plugin in compiler resources jar install deploy; do
    [ -d /usr/share/maven-repo/org/apache/maven/plugins/maven-$plugin-plugin ] ||
      missing+=(libmaven-$plugin-plugin-java)
  done
  [ -d /usr/share/maven-repo/org/apache/maven/plugins/maven-surefire-plugin ] || missing+=(libsurefire-java)
  # RubyGems' clients: gem (with ruby) and bundler.
  command -v gem >/dev/null 2>&1 || missing+=(ruby)
  command -v bundle >/dev/null 2>&1 || missing+=(bundler)
  # The operator page's browser test: headless Chromium over WebDriver.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # Signals to the binary under test (kill), small filesystems (mount: util-linux).
  # (kill is also a shell builtin: look for the program the tests run.)
  [ -x /bin/kill ] || [ -x /usr/bin/kill ] || missing+=(procps)
  command -v mount >/dev/null 2>&1 || missing+=(mount)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
      echo "apt-get install ${missing[*]} failed" >&2; exit 1; }
  fi
}

install_cargo_tools() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest || { echo "cargo install cargo-nextest failed" >&2; exit 1; }
  fi
  install_garage
}

# Garage, the S3 server the production-backend tests and benchmarks run
# against (about 15 minutes to build on two cores; only when missing).
install_garage() {
  if ! { [ -x "$HOME/.cargo/bin/garage" ] && "$HOME/.cargo/bin/garage" --version 2>/dev/null | grep -q '2\.5\.0'; }; then
    log "installing garage 2.5.0 (once per machine)"
    cargo install --locked garage --version 2.5.0 || { echo "cargo install garage failed" >&2; exit 1; }
  fi
}

# Python clients and a PyPI upstream for the package-format tests, in a venv
# of their own (about 2 minutes, once per machine).
VENV="${ARTIFACTAPI_TEST_VENV:-$HOME/.cache/artifactapi/test-venv}"
install_python_tools() {
  if [ ! -x "$VENV/bin/pypi-server" ] || [ ! -x "$VENV/bin/uv" ]; then
    log "installing pypiserver, paste and uv into $VENV"
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q 'pypiserver==2.4.2' paste uv \
      || { echo "installing the Python test tools failed" >&2; exit 1; }
  fi
  export ARTIFACTAPI_TEST_VENV="$VENV"
}

# verdaccio, the npm upstream for the npm tests (6.8.0: later ones need Node 22).
VERDACCIO_DIR="${ARTIFACTAPI_TEST_VERDACCIO:-$HOME/.cache/artifactapi/verdaccio}"
install_node_tools() {
  if [ ! -x "$VERDACCIO_DIR/node_modules/.bin/verdaccio" ]; then
    log "installing verdaccio 6.8.0 into $VERDACCIO_DIR"
    mkdir -p "$VERDACCIO_DIR"
    printf '%s\n' '{"name":"artifactapi-test-verdaccio","private":true,"dependencies":{"verdaccio":"6.8.0"},"overrides":{"node-fetch":"2.7.0"}}' \
      > "$VERDACCIO_DIR/package.json"
    (cd "$VERDACCIO_DIR" && npm install --no-audit --no-fund --loglevel=error) \
      || { echo "installing verdaccio failed" >&2; exit 1; }
  fi
  export ARTIFACTAPI_TEST_VERDACCIO="$VERDACCIO_DIR"
}
