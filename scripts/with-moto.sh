#!/usr/bin/env bash
# Run a command with one moto server (AWS APIs on loopback) for all of it: start the server on a
# free port, export its address as PENSTOCK_TEST_MOTO_ENDPOINT, run the command, stop the server.
set -euo pipefail

python="${PENSTOCK_TEST_PYTHON:-python3}"
if ! "$python" -c 'import moto.server' 2>/dev/null; then
  echo "with-moto: moto is not installed; run: $python -m pip install -r tests/requirements.txt" >&2
  exit 1
fi
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
log="$(mktemp -t penstock-moto.XXXXXX.log)"
"$python" -m moto.server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
server=$!
stop() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -f "$log"
}
trap stop EXIT INT TERM

# Wait (bounded) until the server accepts connections.
for _ in $(seq 1 300); do
  if "$python" -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=0.2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$server" 2>/dev/null; then
    echo "with-moto: moto exited early:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done

export PENSTOCK_TEST_MOTO_ENDPOINT="http://127.0.0.1:$port"
"$@"
