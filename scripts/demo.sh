#!/usr/bin/env bash
# `make demo`: the viewer on the bundled sample studies. Without a display (a server, CI), the
# window is rendered offscreen and saved as demo-screenshot.png instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/cxrviewer --demo "$@"
fi
echo "No display found: rendering the demo window offscreen."
QT_QPA_PLATFORM=offscreen .venv/bin/cxrviewer --demo --screenshot demo-screenshot.png "$@"
echo "Open demo-screenshot.png to see it, or run 'make demo' on a desktop (or under xvfb-run) for the live window."
