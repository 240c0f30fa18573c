#!/usr/bin/env bash
# Run the original Autobahn|Testsuite (Docker image crossbario/autobahn-testsuite) against cowboy_ws.
# Needs Docker; CI here uses kosoku instead (autobahn/run.py), which runs the same case files.
# Reports land in autobahn/reports/docker/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m cowboy_ws --host 0.0.0.0 --port 9001 --compress --max-frame-size 67108864 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  python -c "import socket; socket.create_connection(('127.0.0.1', 9001), 1).close()" 2>/dev/null && break
  sleep 0.1
done
docker run --rm \
  --add-host=host.docker.internal:host-gateway \
  -v "$PWD/autobahn:/config" \
  -v "$PWD/autobahn/reports:/reports" \
  crossbario/autobahn-testsuite \
  wstest -m fuzzingclient -s /config/fuzzingclient.json
