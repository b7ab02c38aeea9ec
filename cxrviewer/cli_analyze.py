"""`cxrviewer analyze`: findings, CAM boxes and optional radiomics for files and folders, as JSON.

Bad files appear as {"file", "error"} entries and the run goes on; the exit status is non-zero only
when nothing could be analysed (or the model could not be loaded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cxrviewer.errors import CxrError


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders walked recursively (the catalog's candidate rules), sorted."""
    from cxrviewer.io.catalog_scan import walk

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(path / rel for rel in sorted(walk(path)))
        else:
            files.append(path)
    return files


def run_analyze(args: argparse.Namespace) -> int:
    from cxrviewer.analysis import Analyzer
    from cxrviewer.io import load_image

    try:
        analyzer = Analyzer(args.model, device=args.device, cam=args.cam, box_method=args.boxes)
    except CxrError as err:
        print(f"cxrviewer: {err}", file=sys.stderr)
        return 1
    except (ValueError, KeyError) as err:
        print(f"cxrviewer: {err}.", file=sys.stderr)
        return 1
    files = expand_paths(args.paths)
    results: list[dict[str, Any]] = []
    analysed = 0
    with _progress(len(files)) as advance:
        for path in files:
            try:
                result = analyzer.analyze(load_image(path), radiomics=args.radiomics)
            except CxrError as err:
                results.append({"file": str(path), "error": str(err)})
                print(f"cxrviewer: {err}", file=sys.stderr)
            else:
                results.append(result.to_json())
                analysed += 1
            advance()
    document = {"model": {"name": analyzer.name, "sha256": analyzer.sha256, "targets": list(analyzer.spec.targets),
                          "architecture": analyzer.spec.architecture, "cam": args.cam, "boxes": analyzer.box_method},
                "results": results}
    text = json.dumps(document, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    else:
        print(text)
    return 0 if analysed else 1


class _progress:
    """A rich progress bar on a terminal for more than one file; silent otherwise."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None

    def __enter__(self):
        if self.total > 1 and sys.stderr.isatty():
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            task = self.bar.add_task("analysing", total=self.total)
            return lambda: self.bar.advance(task)
        return lambda: None

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
