#!/usr/bin/env bash
# Run the trainer (or any script) from a frozen commit, so that editing the working tree cannot
# change a long experiment half-way (lazy imports would otherwise mix old and new modules):
#   scripts/frozen_run.sh COMMIT fit --data ... --name ...        # cxrviewer-train COMMAND ...
#   scripts/frozen_run.sh COMMIT script scripts/pooled_cv.py ...  # a script of that commit
# The commit is checked out once as a git worktree under ${FROZEN_DIR:-/work/frozen}/SHA; the
# repo's .venv is reused, with its editable install pointed at that worktree for this process.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sha=$(git -C "$root" rev-parse --short=12 "$1"); shift
tree=${FROZEN_DIR:-/work/frozen}/$sha
[ -d "$tree" ] || git -C "$root" worktree add --detach "$tree" "$sha" >/dev/null
cd "$root"  # relative data paths (../shared/...) resolve from the checkout, as in the README
if [ "${1:-}" = script ]; then shift; target=$tree/$1; shift; else target=; fi
exec env FROZEN_TREE="$tree" FROZEN_ROOT="$root" FROZEN_TARGET="$target" "$root/.venv/bin/python" - "$@" <<'PY'
import os, runpy, sys
import __editable___cxrviewer_0_1_0_finder as finder  # the editable install's map of package -> folder
root, tree, target = os.environ["FROZEN_ROOT"], os.environ["FROZEN_TREE"], os.environ["FROZEN_TARGET"]
sys.path[:] = [p for p in sys.path if p not in ("", ".", root)]  # not the checkout's own packages
finder.MAPPING.update({name: path.replace(root, tree, 1) for name, path in finder.MAPPING.items()})
import cxrviewer
assert cxrviewer.__file__.startswith(tree), cxrviewer.__file__
if target:
    sys.argv = [target, *sys.argv[1:]]
    runpy.run_path(target, run_name="__main__")
else:
    from cxrviewer.trainer.cli import main
    sys.argv = ["cxrviewer-train", *sys.argv[1:]]
    sys.exit(main())
PY
