#!/usr/bin/env bash
# Create .venv with Python 3.10 and install the locked dependencies (one resolve, see
# requirements.lock). Idempotent and fast when nothing changed: a stamp records the lock's hash.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
VENV=.venv

find_python310() {
    if [ -n "${GUICHET_PYTHON:-}" ]; then echo "$GUICHET_PYTHON"; return; fi
    local root="${PYENV_ROOT:-$HOME/.pyenv}"
    local candidate
    for candidate in $(ls -d "$root"/versions/3.10.* 2>/dev/null | sort -V -r); do
        if [ -x "$candidate/bin/python" ]; then echo "$candidate/bin/python"; return; fi
    done
    for candidate in python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
            command -v "$candidate"; return
        fi
    done
    return 1
}

if ! PYTHON=$(find_python310); then
    echo "ERREUR / ERROR: Python 3.10 is required (Rasa 3.6 supports Python 3.8-3.10) and none was found." >&2
    echo "Looked in \$GUICHET_PYTHON, \$PYENV_ROOT/versions/3.10.* and python3.10 on PATH." >&2
    echo "Install one (e.g. 'pyenv install 3.10') or set GUICHET_PYTHON=/path/to/python3.10." >&2
    exit 1
fi

lock_hash=$( (cat requirements.lock pyproject.toml; echo "$PYTHON") | sha256sum | cut -d' ' -f1)
stamp="$VENV/.guichet-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_hash" ] && [ -x "$VENV/bin/python" ]; then
    exit 0
fi

echo "setup: creating $VENV with $PYTHON" >&2
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
export UV_PYTHON_DOWNLOADS=never
"$VENV/bin/uv" pip sync --quiet --python "$VENV/bin/python" requirements.lock
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
echo "$lock_hash" > "$stamp"
echo "setup: done" >&2
