#!/usr/bin/env bash
# The install walk: what a user does after `pip install`, from a wheel of this checkout,
# in a fresh virtual environment and an empty folder, both outside the checkout.
#
#   bash tests/install_walk.sh [PYTHON]      (make install-check; PYTHON defaults to python3)
#
# Only installing the wheel's dependencies (and setuptools, to build it) reaches the
# network, the package index; everything after that talks to 127.0.0.1 only.
# Exits non-zero with the failing step's name and output on any failure.
set -euo pipefail

python="${1:-python3}"
checkout="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/newsletter-walk.XXXXXX")"
outbox_pid=""
serve_pid=""
unset PYTHONPATH NEWSLETTER_SECRET NEWSLETTER_SMTP_PASSWORD
export PIP_DISABLE_PIP_VERSION_CHECK=1

cleanup() {
    for pid in $outbox_pid $serve_pid; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "install walk FAILED: $*" >&2
    exit 1
}

step() {
    echo "install walk: $*"
}

# run NAME EXPECTED_STATUS COMMAND...: run it, show its output, fail unless it exits so.
run() {
    local name="$1" expected="$2" status=0
    shift 2
    "$@" >"$work/last.out" 2>&1 || status=$?
    sed 's/^/    /' "$work/last.out"
    [ "$status" = "$expected" ] || fail "$name exited $status, not $expected (output above)"
}

step "building the wheel from a clean copy of the checkout"
# A copy, so that the build neither writes into the checkout nor ships a stale build/lib.
mkdir "$work/src"
git -C "$checkout" ls-files -z --cached --others --exclude-standard \
    | (cd "$checkout" && tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) \
    | tar -xf - -C "$work/src"
run "pip wheel" 0 "$python" -m pip wheel --quiet --no-deps -w "$work/wheel" "$work/src"
wheel="$(ls "$work"/wheel/newsletter-*.whl)"
"$python" -m zipfile -l "$wheel" | grep -q "composer/templates/blocks/news.mjml.j2" \
    || fail "the wheel $wheel does not ship the default templates"

step "installing $(basename "$wheel") into a fresh virtual environment"
"$python" -m venv "$work/venv"
run "pip install" 0 "$work/venv/bin/python" -m pip install --quiet "$wheel"
newsletter="$work/venv/bin/newsletter"

mkdir "$work/letter"
cd "$work/letter"
installed="$("$work/venv/bin/python" -c 'import composer; print(composer.__file__)')"
case "$installed" in
    "$work/venv/"*) ;;
    *) fail "composer is imported from $installed, not from the fresh environment" ;;
esac

step "newsletter init, in an empty folder"
run "init" 0 "$newsletter" init
issue="issues/$(date +%F)-first-issue.md"
for file in config.toml .gitignore "$issue"; do
    [ -f "$file" ] || fail "init did not write $file"
done

step "newsletter build and check on the first issue"
run "build" 0 "$newsletter" build "$issue"
[ -s "build/$(basename "$issue" .md).html" ] || fail "build wrote no HTML"
run "check of the skeleton" 1 "$newsletter" check "$issue"
grep -q '"TK" placeholder' "$work/last.out" || fail "check did not report the TK placeholders"
sed -i 's/TK/Walk/g' "$issue"
run "check of the written issue" 0 "$newsletter" check "$issue"

step "newsletter templates: copy one default, edit it, build with it"
run "templates copy" 0 "$newsletter" templates copy email
sed -i 's/Thanks for reading/Thanks for walking/' templates/email.mjml.j2
run "templates list" 0 "$newsletter" templates list
grep -q "email.mjml.j2 *yours, overrides the default" "$work/last.out" \
    || fail "templates list does not show email.mjml.j2 as overridden"
run "build with an own template" 0 "$newsletter" build "$issue"
grep -q "Thanks for walking" "build/$(basename "$issue" .md).html" \
    || fail "the newsletter's own email.mjml.j2 was not used"

step "newsletter outbox, on a free port in the background"
PYTHONUNBUFFERED=1 "$newsletter" outbox --port 0 >"$work/outbox.log" 2>&1 &
outbox_pid=$!
port=""
for _ in $(seq 100); do
    port="$(sed -n 's/^Outbox on 127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$work/outbox.log")"
    [ -n "$port" ] && break
    kill -0 "$outbox_pid" 2>/dev/null || break
    sleep 0.2
done
[ -n "$port" ] || fail "the outbox did not start: $(cat "$work/outbox.log")"
sed -i "s/^port = 1025\b/port = $port/" config.toml
grep -q "^port = $port\b" config.toml || fail "could not point config.toml at port $port"

step "send-test, subscribers add, send, status"
run "send-test" 0 "$newsletter" send-test "$issue"
run "subscribers add" 0 "$newsletter" subscribers add ann@example.org --name Ann --tier paid
run "subscribers add" 0 "$newsletter" subscribers add bob@example.org --name Bob
run "send" 0 "$newsletter" send "$issue" --yes
run "status" 0 "$newsletter" status "$issue"
grep -q "to all: complete" "$work/last.out" || fail "status does not say the dispatch is complete"

step "what the outbox received"
run "the outbox's messages" 0 "$work/venv/bin/python" - outbox <<'EOF'
import sys
from email import message_from_bytes, policy
from pathlib import Path

messages = {}
for path in sorted(Path(sys.argv[1]).glob("*.eml")):
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    messages[message["To"].addresses[0].addr_spec] = message
    print(f"{message['To']}: {message['Subject']}")
assert sorted(messages) == ["ann@example.org", "bob@example.org", "editor@example.com"], messages
assert messages["editor@example.com"]["Subject"].startswith("[TEST] ")
text = {to: m.get_body(("plain",)).get_content() for to, m in messages.items()}
assert "Walk LEAD IN CAPITALS" in text["ann@example.org"], "the paid copy lacks the big story"
assert "Walk LEAD IN CAPITALS" not in text["bob@example.org"], "the free copy is not cut"
assert "Keep reading" in text["bob@example.org"], "the free copy has no Keep reading link"
assert all("Thanks for walking" in m.get_body(("html",)).get_content() for m in messages.values())
EOF

step "newsletter serve: the archive and a page of its own, from the wheel"
PYTHONUNBUFFERED=1 "$newsletter" serve --port 0 >"$work/serve.log" 2>&1 &
serve_pid=$!
serve_port=""
for _ in $(seq 100); do
    serve_port="$(sed -n 's/^Serving .* on http:\/\/[0-9.]*:\([0-9]*\) .*/\1/p' "$work/serve.log")"
    [ -n "$serve_port" ] && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.2
done
[ -n "$serve_port" ] || fail "serve did not start: $(cat "$work/serve.log")"
run "serve's pages" 0 "$work/venv/bin/python" - "$serve_port" "$(basename "$issue" .md)" <<'EOF'
import sys
import time
from urllib.request import urlopen

base = f"http://127.0.0.1:{sys.argv[1]}"
slug = sys.argv[2]
for _ in range(50):
    try:
        archive = urlopen(f"{base}/").read().decode()
        break
    except OSError:
        time.sleep(0.2)
assert "Archive" in archive, archive
# Sent above, so published; a skeleton would not be.
assert f"/issues/{slug}" in archive, archive
assert "Walk" in urlopen(f"{base}/issues/{slug}").read().decode()
how = urlopen(f"{base}/unsubscribe").read().decode()
assert "unsubscribe link" in how, how
EOF
kill "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
serve_pid=""

echo "install walk: passed"
