#!/usr/bin/env bash
# Create or reuse .venv in the repository root and install everything cxrviewer needs:
# the system libraries Qt and the DICOM reference tools need, then the pinned Python stack.
# Idempotent: a stamp holding the hash of the requirement files skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
STAMP=$VENV/.cxrviewer-installed

# --- system packages -------------------------------------------------------------------------
# Qt's xcb/offscreen platforms need these libraries; xvfb gives a real window without a screen;
# dcmtk (dcmj2pnm) and dicom3tools (dciodvfy) are the independent references the tests use.
APT_PACKAGES=(libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0
  libxcb-randr0 libxcb-xinerama0 libxcb-xkb1 xvfb xauth dcmtk dicom3tools)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; then
    :
  else
    echo "bootstrap: warning: could not install ${missing[*]}; the GUI or the reference tests may be skipped." >&2
  fi
fi

# --- Python environment ----------------------------------------------------------------------
want=$(cat requirements/*.txt pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
$PIP install -q --upgrade pip
# torch first and alone: the pinned build lies on local disk on the development machines.
$PIP install -q -r requirements/torch.txt
# pyradiomics 3.0.1 has no wheel and fails in an isolated build: give it numpy, setuptools and
# wheel first, then build it against them without isolation.
$PIP install -q "numpy==2.4.6" "setuptools>=70" wheel
$PIP install -q --no-build-isolation pyradiomics==3.0.1
$PIP install -q -r requirements/base.txt -r requirements/test.txt
$PIP install -q --no-deps --no-build-isolation -e .
echo "$want" > "$STAMP"
echo "bootstrap: environment ready in $VENV"
