"""Command line: ``python -m coreg_plugin align|apply|stack ...``.

``align``'s option names follow coregix's ``align-image-pair`` so its scripts keep working; the
defaults are those of :func:`.align_image_pair` and :func:`.coregister_stack`.
The JSON summary goes to stdout, logs to stderr;
the exit code is 0 on success, 1 when registration failed or was not trustworthy, 2 for unusable
input or options (including an output that cannot be written), 130 when interrupted, 143 when
terminated (SIGTERM); in both cases the staged outputs are removed and nothing is published.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from .apply.merge import DEFAULT_MERGE_METHOD, MERGE_METHOD_NAMES
from .common import options
from .common.errors import CancelledError, InputError, LargeOutputError, RegistrationError
from .workflows.align import align_image_pair
from .workflows.apply_correction import apply_correction
from .workflows.stack import DEFAULT_STACK_RESAMPLING, MODES, coregister_stack

EXIT_REGISTRATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _add_align_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "align", help="register a moving raster to a fixed raster and write it corrected",
        description="Estimate how the moving raster is misregistered against the fixed raster and "
                    "write it corrected. Prints a JSON summary on stdout.",
    )
    p.add_argument("--moving-image", required=True, help="raster to correct")
    p.add_argument("--fixed-image", required=True, help="reference raster")
    p.add_argument("--output-image", required=True,
                   help="corrected raster to write (format from --driver, else the extension, else GeoTIFF)")
    p.add_argument("--band-index", type=int, default=0, help="0-based band used for matching in both images (0)")
    p.add_argument("--moving-band-index", type=int, help="0-based matching band of the moving image")
    p.add_argument("--fixed-band-index", type=int, help="0-based matching band of the fixed image")
    p.add_argument("--moving-nodata", type=float, help="extra nodata value of the moving image")
    p.add_argument("--fixed-nodata", type=float, help="extra nodata value of the fixed image")
    p.add_argument("--output-nodata", type=float,
                   help="nodata of the output (default: the moving image's, else NaN for floats, 0 for integers)")
    p.add_argument("--use-edge-proxies", action=argparse.BooleanOptionalAction, default=True,
                   help="match gradient-magnitude images instead of raw values (on)")
    p.add_argument("--output-on-moving-grid", action=argparse.BooleanOptionalAction, default=True,
                   help="write on the moving grid (on); --no-output-on-moving-grid writes on the fixed grid")
    p.add_argument("--clip-fixed-to-moving", action=argparse.BooleanOptionalAction, default=True,
                   help="on the fixed grid, write only the part covering the moving image (on)")
    p.add_argument("--model", choices=options.MODELS, default="auto",
                   help="correction model (auto: the one held-out tie points support; local: affine plus a "
                        "smooth displacement field)")
    p.add_argument("--resampling", choices=options.RESAMPLING_METHODS, default=options.DEFAULT_RESAMPLING,
                   help=f"output resampling ({options.DEFAULT_RESAMPLING})")
    p.add_argument("--window-size", type=int, default=options.DEFAULT_WINDOW_SIZE,
                   help=f"tie-point window side in moving pixels ({options.DEFAULT_WINDOW_SIZE})")
    p.add_argument("--min-quality", type=float, default=options.DEFAULT_MIN_QUALITY,
                   help=f"refuse results whose quality figure is below this ({options.DEFAULT_MIN_QUALITY})")
    p.add_argument("--force", action="store_true", help="write a result even below --min-quality (marked untrusted)")
    p.add_argument("--split-factor", type=int, default=0,
                   help="accepted for coregix compatibility; no effect (tie points always cover the overlap)")
    p.add_argument("--temp-dir", help="parent folder for the scratch folder")
    p.add_argument("--keep-temp-dir", action="store_true",
                   help="keep the scratch folder: overlap images, edge proxies, masks, tie_points.csv")
    p.add_argument("--report", help="also write an HTML report (figures, tie-point maps, checkerboard) here")
    _add_output_options(p)
    p.add_argument("--correction-file", help="also save the correction (JSON) to apply to other rasters of the scene")
    p.add_argument("--gcp-file", help="also save the tie points used as a QGIS Georeferencer .points file")
    p.add_argument("--no-resample", action="store_true",
                   help="correct by the georeference only: pixels copied bit for bit, geotransform moved "
                        "(translation only; auto then estimates a translation)")
    p.add_argument("--log-to-console", action="store_true", help="log progress to stderr")


def _add_apply_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "apply", help="apply a saved correction to any raster of the scene",
        description="Apply a correction saved by align --correction-file to a raster of the same scene "
                    "(any resolution, CRS, band count); the output keeps the input's grid. Prints a JSON "
                    "summary on stdout.",
    )
    p.add_argument("--correction", required=True, help="correction file (JSON) written by align --correction-file")
    p.add_argument("--input", required=True, help="raster to correct")
    p.add_argument("--output", required=True, help="corrected raster to write")
    p.add_argument("--resampling", choices=options.RESAMPLING_METHODS, default=options.DEFAULT_RESAMPLING,
                   help=f"resampling ({options.DEFAULT_RESAMPLING}; nearest or mode keep class values)")
    p.add_argument("--no-resample", action="store_true",
                   help="move the georeference only, pixels copied bit for bit (translations only)")
    p.add_argument("--output-nodata", type=float, help="nodata of the output (default: the input's)")
    _add_output_options(p)
    p.add_argument("--log-to-console", action="store_true", help="log progress to stderr")


def _creation_option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"creation option '{text}' is not KEY=VALUE")
    return key, value


def _add_stack_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "stack", help="bring many rasters onto one reference grid, merged or stacked",
        description="Resample every input onto the reference raster's CRS, grid and bounds (optionally "
                    "registering each one first) and merge them into one raster or stack them as bands. "
                    "Prints a JSON summary on stdout.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="input rasters")
    p.add_argument("--reference", required=True, help="raster whose CRS, grid and bounds the output takes")
    p.add_argument("--output", help="merged or stacked raster to write")
    p.add_argument("--output-folder", help="also (or only, in stack mode) write one file per input here")
    p.add_argument("--mode", choices=MODES, default="merge", help="merge into one raster, or stack as bands (merge)")
    p.add_argument("--merge-method", choices=MERGE_METHOD_NAMES, default=DEFAULT_MERGE_METHOD,
                   help=f"how overlapping pixels are merged ({DEFAULT_MERGE_METHOD})")
    p.add_argument("--resampling", choices=options.RESAMPLING_METHODS, default=DEFAULT_STACK_RESAMPLING,
                   help=f"resampling onto the reference grid ({DEFAULT_STACK_RESAMPLING})")
    p.add_argument("--register", action="store_true", help="correct each input's misregistration first")
    p.add_argument("--band-index", type=int, default=0, help="0-based band of each input used for registration (0)")
    p.add_argument("--reference-band-index", type=int, default=0, help="0-based reference band for registration (0)")
    p.add_argument("--model", choices=options.MODELS, default="auto", help="registration model (auto)")
    p.add_argument("--nodata", type=float, help="output nodata (default: the first input's, else NaN or 0)")
    _add_output_options(p)
    p.add_argument("--log-to-console", action="store_true", help="log progress to stderr")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--driver", help="GDAL driver of the outputs (default: from the extension, else GTiff; COG works)")
    p.add_argument("--co", dest="creation_options", action="append", type=_creation_option, default=[],
                   metavar="KEY=VALUE", help="creation option for the output driver (repeatable)")
    p.add_argument("--allow-large-output", action="store_true",
                   help="write outputs even when their uncompressed size exceeds the disk's free space")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m coreg_plugin", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_align_parser(commands)
    _add_apply_parser(commands)
    _add_stack_parser(commands)
    return parser.parse_args(argv)


def _function_kwargs(args: argparse.Namespace) -> dict:
    """The parsed options as keyword arguments of the core function (creation options as a dict)."""
    kwargs = vars(args).copy()
    for key in ("command", "log_to_console"):
        kwargs.pop(key)
    kwargs["creation_options"] = dict(kwargs["creation_options"])
    return kwargs


def _align(args: argparse.Namespace) -> dict:
    kwargs = _function_kwargs(args)
    return align_image_pair(kwargs.pop("moving_image"), kwargs.pop("fixed_image"),
                            kwargs.pop("output_image"), **kwargs).summary


def _apply(args: argparse.Namespace) -> dict:
    return apply_correction(args.correction, args.input, args.output, resampling=args.resampling,
                            no_resample=args.no_resample, output_nodata=args.output_nodata, driver=args.driver,
                            creation_options=dict(args.creation_options),
                            allow_large_output=args.allow_large_output)


def _stack(args: argparse.Namespace) -> dict:
    kwargs = _function_kwargs(args)
    return coregister_stack(kwargs.pop("inputs"), kwargs.pop("reference"), kwargs.pop("output"), **kwargs).summary


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like Ctrl-C, so staged outputs are removed on the way out."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, format="coreg: %(message)s",
                        level=logging.INFO if args.log_to_console else logging.WARNING)
    try:
        with _sigterm_unwinds():
            summary = {"align": _align, "apply": _apply, "stack": _stack}[args.command](args)
    except LargeOutputError as exc:
        print(f"coreg: error: {exc}; use --allow-large-output to write it anyway", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InputError as exc:
        print(f"coreg: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RasterioError, CPLE_BaseError, OSError, SystemError) as exc:  # GDAL or the system refused a read or write
        print(f"coreg: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Terminated:
        print("coreg: terminated; nothing was written", file=sys.stderr)
        return EXIT_TERMINATED
    except RegistrationError as exc:
        print(f"coreg: registration failed: {exc}", file=sys.stderr)
        return EXIT_REGISTRATION_FAILED
    except (CancelledError, KeyboardInterrupt):
        print("coreg: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
