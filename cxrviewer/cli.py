"""`cxrviewer`: the viewer, plus command-line tools (info, render, dicomize).

    cxrviewer [PATH ...] [--demo] [--screenshot OUT.png]   open the viewer
    cxrviewer info FILE ... [--json]                        header facts of images
    cxrviewer render FILE OUT.png [--window C W] [--size N] display conversion to PNG
    cxrviewer dicomize --labels CSV IMAGES_DIR OUT_DIR      NIH PNGs -> DICOM
    cxrviewer analyze PATH... [--model REF] [--json OUT]    findings, CAM boxes, radiomics

Only argparse is imported here; each command imports what it needs when it runs, so the
window opens before torch or pyradiomics are loaded.
"""

from __future__ import annotations

import argparse
import sys

TOOLS = ("info", "render", "dicomize", "analyze")


def tools_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxrviewer", description="cxrviewer command-line tools.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="identifiers, size, bits, photometric, syntax, spacing, windows")
    info.add_argument("files", nargs="+", metavar="FILE")
    info.add_argument("--json", action="store_true", help="one JSON document on stdout")

    render = sub.add_parser("render", help="render an image to an 8-bit PNG through its VOI")
    render.add_argument("file", metavar="FILE")
    render.add_argument("out", metavar="OUT.png")
    render.add_argument("--window", nargs=2, type=float, metavar=("CENTER", "WIDTH"),
                        help="a linear window instead of the file's own VOI")
    render.add_argument("--size", type=int, metavar="N", help="scale so the longer side is N pixels")
    invert = render.add_mutually_exclusive_group()
    invert.add_argument("--invert", dest="invert", action="store_const", const=True,
                        help="show inverted (the opposite of what the photometric interpretation says)")
    invert.add_argument("--no-invert", dest="invert", action="store_const", const=False,
                        help="never invert, even MONOCHROME1")

    dicomize = sub.add_parser("dicomize", help="turn NIH ChestX-ray14 PNGs into DICOM")
    dicomize.add_argument("--labels", required=True, metavar="CSV", help="the NIH Data_Entry_2017*.csv table")
    dicomize.add_argument("--modality", choices=("DX", "SC"), default="DX",
                          help="DX Image Storage (default) or Secondary Capture")
    dicomize.add_argument("images", metavar="IMAGES_DIR")
    dicomize.add_argument("out", metavar="OUT_DIR")
    analyze = sub.add_parser("analyze", help="score the findings of images, with CAM boxes and radiomics")
    analyze.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    analyze.add_argument("--model", default="default", metavar="REF",
                         help="a model file or registered model name (default: the embedded default model)")
    analyze.add_argument("--cam", default="gradcam", choices=("gradcam", "gradcam++", "scorecam", "native"),
                         help="CAM method for the heatmaps and boxes")
    analyze.add_argument("--boxes", default=None, choices=("scalp", "talasila", "threshold"),
                         help="box algorithm (default: the one the model file names, else SCALP Algorithm 1)")
    analyze.add_argument("--radiomics", action="store_true", help="add pyradiomics features to every box")
    analyze.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    analyze.add_argument("--json", metavar="OUT", help="write the JSON document here (default: stdout)")
    return parser


def viewer_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrviewer",
        description="Chest X-ray viewer. Tools: " + ", ".join(f"'cxrviewer {t} -h'" for t in TOOLS) + ".",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="folders or files to open")
    parser.add_argument("--demo", action="store_true", help="open the bundled sample studies")
    parser.add_argument("--screenshot", metavar="OUT.png",
                        help="render the window offscreen, save it to OUT.png and exit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


def quiet_pydicom() -> None:
    """In the app's own processes, pydicom's value-validation warnings (a UID with a letter, an
    over-long string) are noise to a radiologist: the loader reports what matters as one sentence."""
    import logging

    from pydicom import config

    config.settings.reading_validation_mode = config.IGNORE
    logging.getLogger("pydicom").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet_pydicom()
    if argv and argv[0] in TOOLS:
        args = tools_parser().parse_args(argv)
        if args.command == "analyze":
            from cxrviewer.cli_analyze import run_analyze

            return run_analyze(args)
        from cxrviewer import cli_tools

        return getattr(cli_tools, f"run_{args.command}")(args)
    args = viewer_parser().parse_args(argv)
    if args.version:
        from cxrviewer import __version__

        print(f"cxrviewer {__version__}")
        return 0
    from cxrviewer.gui.app import run_viewer

    return run_viewer(paths=args.paths, demo=args.demo, screenshot=args.screenshot)


if __name__ == "__main__":
    sys.exit(main())
