# Sourced by .ci/schemathesis and .ci/soak: `serve PORT [FLAG...]` builds the server, starts
# it on its bundled model on 127.0.0.1:PORT with the given flags, and waits until it is
# ready. Sets `server` (its pid) and `log` (its output, shown if it never gets ready); both
# are cleaned up on exit.
serve() {
  local port=$1
  shift
  if ! command -v curl >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
  fi
  cargo build --locked -q -p spade-server
  log=$(mktemp)
  target/debug/spade-server --listen "127.0.0.1:$port" "$@" >"$log" 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && return 0
    sleep 1
  done
  cat "$log" >&2
  echo "the server on port $port never became ready" >&2
  return 1
}
