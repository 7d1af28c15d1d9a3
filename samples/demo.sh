#!/usr/bin/env bash
# `make demo`, the sending half: the built-in outbox, a sample list, a test, the dispatch.
# Everything lives under build/demo/ (its own config, database and outbox), so the demo
# starts fresh each time and never touches a real list.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DEMO=build/demo
ISSUE=issues/2024-05-03-example.md

rm -rf "$DEMO"
mkdir -p "$DEMO"
# A free port, so a busy 1025 (another outbox, a real mail catcher) does not stop the demo.
PORT=$("$BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -e "s/^port = 1025/port = $PORT/" config.toml > "$DEMO/config.toml"
CONFIG=(--config "$DEMO/config.toml")

"$BIN/newsletter" outbox --port "$PORT" --dir "$DEMO/outbox" "${CONFIG[@]}" > "$DEMO/outbox.log" 2>&1 &
OUTBOX=$!
trap 'kill "$OUTBOX" 2>/dev/null || true; wait "$OUTBOX" 2>/dev/null || true' EXIT
"$BIN/python" - "$PORT" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 15
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the outbox did not start; see build/demo/outbox.log")
        time.sleep(0.1)
PY
echo "Outbox listening on 127.0.0.1:$PORT"

"$BIN/newsletter" subscribers import samples/subscribers.csv "${CONFIG[@]}"
"$BIN/newsletter" send-test "$ISSUE" --to editor@example.com "${CONFIG[@]}"
"$BIN/newsletter" send "$ISSUE" --yes "${CONFIG[@]}"
"$BIN/newsletter" status "$ISSUE" "${CONFIG[@]}"

kill "$OUTBOX"
wait "$OUTBOX" 2>/dev/null || true
trap - EXIT
COUNT=$(find "$DEMO/outbox" -name '*.eml' | wc -l)
echo "The outbox stored $COUNT messages in $DEMO/outbox/ (one .eml each; open any in a mail client)."
