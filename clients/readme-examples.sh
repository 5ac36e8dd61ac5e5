#!/usr/bin/env bash
# Issue 33's "Done when", as a user meets it. In a copy of the repository's
# tracked files (as they are in the work tree):
#   - `npm install ./clients/typescript`, run from the copy's root;
#   - `pip install ./clients/python` into a fresh venv (then its [fastapi]
#     extra, for the FastAPI example);
# then the README examples of the three clients run against a real
# `mandate serve` (on a free port, with none of the caller's MANDATE_*
# variables), and the answers the READMEs write beside them are checked.
# The examples are read from the READMEs themselves, so they cannot drift:
# clients/readme-examples/python_examples.py, typescript_examples.mjs, and
# the Rust README's block built as an example binary of mandate-client.
#
# MANDATE_BIN: the server (default target/debug/mandate). The Rust example
# builds into CARGO_TARGET_DIR (default: this repository's target/).
# Prints `readme examples: N passed, M failed`; exits non-zero on any
# failure, and when nothing was checked.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
here=$repo/clients/readme-examples
bin=${MANDATE_BIN:-$repo/target/debug/mandate}
if [ ! -x "$bin" ]; then
    echo "no mandate binary at $bin: build it (cargo build) or set MANDATE_BIN" >&2
    exit 1
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
target=${CARGO_TARGET_DIR:-$repo/target}
# Only what this script sets reaches the server and the examples.
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^MANDATE_' || true)

step() { printf '\n== %s\n' "$*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/mandate-readme.XXXXXX")
server=
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

step "a copy of the repository's tracked files: $work/repo"
copy=$work/repo
mkdir "$copy"
(
    cd "$repo"
    git ls-files -z | while IFS= read -r -d '' file; do
        if [ -e "$file" ] || [ -L "$file" ]; then printf '%s\0' "$file"; fi  # not deleted in the work tree
    done | xargs -0 cp -P --parents -t "$copy" --
)
echo "$(cd "$copy" && find . -type f | wc -l) files"

step "npm install ./clients/typescript (from the copy's root)"
(cd "$copy" && npm install --no-audit --no-fund ./clients/typescript)
test -f "$copy/node_modules/mandate-client/dist/esm/index.js"
test -f "$copy/node_modules/mandate-client/dist/cjs/index.js"

step "pip install ./clients/python (a fresh venv), then './clients/python[fastapi]'"
python3 -m venv "$work/venv"
py=$work/venv/bin/python
(cd "$copy" && "$py" -m pip install -q --disable-pip-version-check ./clients/python)
"$py" -c 'import sys, mandate_client; assert "fastapi" not in sys.modules, "importing mandate_client needs FastAPI"'
(cd "$copy" && "$py" -m pip install -q --disable-pip-version-check './clients/python[fastapi]')

step "mandate serve ($bin) on a free port"
mkdir "$work/serve"
(cd "$work/serve" && exec env NO_COLOR=1 "$bin" serve --listen 127.0.0.1:0 >/dev/null 2>"$work/serve.log") &
server=$!
url=
for _ in $(seq 600); do
    url=$(sed -n 's/^mandate listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log" | head -n 1)
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "mandate serve printed no address:" >&2
    cat "$work/serve.log" >&2
    exit 1
fi
python3 - "$url/readyz" <<'EOF'
import sys, time, urllib.request
deadline = time.monotonic() + 60
while True:
    try:
        if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"{sys.argv[1]} never answered 200")
    time.sleep(0.05)
EOF
echo "ready at $url"
export MANDATE_URL=$url

log=$work/examples.log
: >"$log"
statuses=0

step "the Python README's examples (clients/python/README.md)"
set +e
(cd "$work" && "$py" "$here/python_examples.py" "$copy/clients/python/README.md" "$copy/clients/cases.json") 2>&1 | tee -a "$log"
statuses=$((statuses + PIPESTATUS[0]))
set -e

step "the TypeScript README's examples (clients/typescript/README.md)"
set +e
node "$here/typescript_examples.mjs" "$copy/clients/typescript/README.md" "$copy/clients/cases.json" "$copy" 2>&1 | tee -a "$log"
statuses=$((statuses + PIPESTATUS[0]))
set -e

step "the Rust README's example (clients/rust/README.md, built as an example of mandate-client)"
mkdir -p "$copy/clients/rust/examples"
# Rustdoc's hidden lines (`# …`) are part of the code: shown here.
python3 - "$copy/clients/rust/README.md" >"$copy/clients/rust/examples/readme.rs" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
blocks = re.findall(r"^```rust[^\n]*\n(.*?)^```$", text, flags=re.S | re.M)
assert len(blocks) == 1, f"{len(blocks)} rust blocks in the README"
print("// Made from clients/rust/README.md by clients/readme-examples.sh.")
for line in blocks[0].splitlines():
    print("" if line.strip() == "#" else re.sub(r"^(\s*)# ", r"\1", line))
print("""
#[tokio::main]
async fn main() {
    demo().await.expect("the README's example");
}""")
EOF
set +e
(cd "$copy" && CARGO_TARGET_DIR=$target cargo run --locked -q -p mandate-client --example readme) >"$work/rust.out" 2>"$work/rust.err"
rust_status=$?
set -e
[ "$rust_status" -eq 0 ] || cat "$work/rust.err"
python3 - "$work/rust.out" "$rust_status" "$copy/clients/cases.json" <<'EOF' 2>&1 | tee -a "$log"
import json, re, sys
out = open(sys.argv[1], encoding="utf-8").read().splitlines()
status = int(sys.argv[2])
carol = json.load(open(sys.argv[3], encoding="utf-8"))["decisions"][0]  # the README asks about the same order
assert carol["request"]["subject"]["id"] == "carol" and carol["request"]["action"]["name"] == "place_order"
expected = "{} by {} (Some(\"…\"))".format(str(carol["decision"]).lower(), json.dumps(carol["reasons"]))
pattern = re.escape(expected).replace("…", "[0-9a-f]{12}")
checks = [
    (status == 0, "the Rust example runs", f"exit {status}"),
    (len(out) == 1 and re.fullmatch(pattern, out[0]) is not None, f"it prints {expected}", f"it printed {out}"),
]
for ok, what, detail in checks:
    print(("ok - " if ok else "not ok - ") + what + ("" if ok else "\n    " + detail))
passed = sum(ok for ok, _, _ in checks)
print(f"rust: {passed} passed, {len(checks) - passed} failed")
EOF
statuses=$((statuses + rust_status))

read -r passed failed < <(awk '/^(python|typescript|rust): [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4 } END { print p + 0, f + 0 }' "$log")
languages=$(grep -cE '^(python|typescript|rust): [0-9]+ passed, [0-9]+ failed$' "$log" || true)
if [ "$statuses" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
if [ "$languages" -ne 3 ]; then
    echo "error: $languages of the 3 languages reported their checks"
    failed=$((failed + 1))
fi
echo
echo "readme examples: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
