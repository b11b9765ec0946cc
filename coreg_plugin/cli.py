"""Command line: ``python -m coreg_plugin align|apply|stack ...``.

``align``'s option names follow coregix's ``align-image-pair`` so its scripts keep working; the
defaults are those of :func:`.align_image_pair` and :func:`.coregister_stack`.
The JSON summary goes to stdout, logs to stderr; on a terminal, stderr also shows a progress bar
(the stage, the time left; ``--quiet`` turns it off). ``stack --dask-scheduler tcp://HOST:PORT``
runs the registrations and output blocks on a Dask cluster.
The exit code is 0 on success, 1 when registration failed or was not trustworthy, 2 for unusable
input or options (including an output that cannot be written), 3 when the Dask cluster could not
do the work (scheduler unreachable, no worker left, a task lost with its workers), 130 when
interrupted, 143 when terminated (SIGTERM); in each failure the staged outputs are removed and
nothing is published.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import errno
import importlib
import json
import logging
import os
import shutil  # noqa: F401 (argparse's help formatter imports it while parsing: here, while handles are left)
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from .common import options
from .common.errors import CancelledError, InputError, LargeOutputError, RegistrationError
from .common.names import DEFAULT_MERGE_METHOD, DEFAULT_STACK_RESAMPLING, MERGE_METHOD_NAMES, MODES
from .common.progress import ProgressCallback, terminal_bar
from .io.raster_source import too_many_open_files

# The workflows are imported by the command that runs them (:func:`_workflow`): a stack without
# registration never loads the estimation's modules (scipy's signal, stats and ndimage,
# scikit-image: about 1 s).

EXIT_REGISTRATION_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CLUSTER_FAILED = 3
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
                   help=f"tie-point window side in moving pixels, or in the fixed image's pixels when those "
                        f"are coarser ({options.DEFAULT_WINDOW_SIZE})")
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
    _add_console_options(p)


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
    _add_console_options(p)


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
    p.add_argument("--window-size", type=int, default=options.DEFAULT_WINDOW_SIZE,
                   help=f"registration's tie-point window side in input pixels ({options.DEFAULT_WINDOW_SIZE})")
    p.add_argument("--nodata", type=float, help="output nodata (default: the first input's, else NaN or 0)")
    _add_output_options(p)
    p.add_argument("--dask-scheduler", metavar="tcp://HOST:PORT",
                   help="run the registrations and the output blocks on the Dask cluster whose scheduler is "
                        "at this address (needs the Python package 'distributed'); its workers must import "
                        "the same coreg_plugin and read the inputs and reference at the same paths (relative "
                        "paths are made absolute); the outputs are written here")
    p.add_argument("--dask-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --dask-scheduler: how long to wait to reach the scheduler, and for a worker "
                        "when the cluster has none, before giving up with nothing written (60)")
    _add_console_options(p)


def _add_console_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-to-console", action="store_true", help="log progress to stderr")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (shown on stderr when it is a terminal and the run takes a while)")


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
    for key in ("command", "log_to_console", "quiet", "dask_scheduler", "dask_timeout"):
        kwargs.pop(key, None)
    kwargs["creation_options"] = dict(kwargs["creation_options"])
    return kwargs


def _workflow(module: str, name: str) -> Callable[..., Any]:
    """``name`` of the workflow module ``module``, imported now; an ``InputError`` naming the limit
    when the process has no file handle left to read the module with."""
    try:
        return getattr(importlib.import_module(f"{__package__}.workflows.{module}"), name)
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise InputError(f"coreg cannot load its {module} workflow: {too_many_open_files()}") from None
        raise


def _align(args: argparse.Namespace, progress: ProgressCallback | None) -> dict:
    align_image_pair = _workflow("align", "align_image_pair")
    kwargs = _function_kwargs(args)
    return align_image_pair(kwargs.pop("moving_image"), kwargs.pop("fixed_image"),
                            kwargs.pop("output_image"), progress=progress, **kwargs).summary


def _apply(args: argparse.Namespace, progress: ProgressCallback | None) -> dict:
    apply_correction = _workflow("apply_correction", "apply_correction")
    return apply_correction(args.correction, args.input, args.output, resampling=args.resampling,
                            no_resample=args.no_resample, output_nodata=args.output_nodata, driver=args.driver,
                            creation_options=dict(args.creation_options),
                            allow_large_output=args.allow_large_output, progress=progress)


def _stack(args: argparse.Namespace, progress: ProgressCallback | None) -> dict:
    coregister_stack = _workflow("stack", "coregister_stack")
    kwargs = _function_kwargs(args)
    inputs, reference = kwargs.pop("inputs"), kwargs.pop("reference")
    if args.dask_scheduler is not None:  # the workers read them, from wherever they were started
        inputs, reference = [_absolute(p) for p in inputs], _absolute(reference)
    with _dask_executor(args.dask_scheduler, args.dask_timeout, args.log_to_console) as executor:
        return coregister_stack(inputs, reference, kwargs.pop("output"), executor=executor, progress=progress,
                                **kwargs).summary


def _absolute(path: str) -> str:
    """``path`` made absolute if it names a file here (a GDAL dataset name is kept as it is)."""
    return os.path.abspath(path) if os.path.exists(path) else path


def _stages(args: argparse.Namespace) -> list[tuple[float, str]]:
    """The progress bar's stage at each percentage of the run: the shares the workflows give their
    steps (Align: coarse match 0-5 %, tie points and fit 5-50 %, output 50-100 %; Stack: registration
    0-40 % when registering, then the output blocks)."""
    if args.command == "align":
        return [(0, "align: coarse match"), (5, "align: tie points"), (50, "align: writing")]
    if args.command == "apply":
        return [(0, "apply: writing")]
    where = " on the Dask cluster" if args.dask_scheduler else ""
    if args.register:
        return [(0, f"stack: registering {len(args.inputs)} inputs{where}"), (40, f"stack: warping and writing{where}")]
    return [(0, f"stack: warping and writing {len(args.inputs)} inputs{where}")]


class ClusterError(Exception):
    """The Dask cluster could not do the work: the scheduler unreachable, no worker for too long, or
    a task lost with every worker that ran it. Nothing is published."""


class _DaskExecutor(cf.Executor):
    """A ``concurrent.futures.Executor`` on a Dask cluster (``client.get_executor()`` underneath)
    that gives up instead of waiting forever: while tasks are pending and the cluster has had no
    worker (or the client no scheduler) for ``timeout_s`` seconds, they fail with a
    :class:`ClusterError`. A task whose worker dies is rerun by Dask on another worker; one lost
    with every worker that ran it (Dask's ``KilledWorker``) fails with a :class:`ClusterError`, as
    does a task a worker cannot load (coreg_plugin not importable there)."""

    def __init__(self, client: Any, address: str, timeout_s: float) -> None:
        self._client = client
        self._address = address
        self._timeout_s = timeout_s
        self._inner = client.get_executor(pure=False)
        self._lock = threading.Lock()
        self._pending: set[cf.Future] = set()
        self._closed = threading.Event()
        self._watch = threading.Thread(target=self._watch_workers, name="coreg-dask-watch", daemon=True)
        self._watch.start()

    @property
    def _max_workers(self) -> int:
        """Tasks the cluster runs at once (its workers' threads), as the stack reads from any
        executor (:func:`coreg_plugin.workflows.stack.executor_workers`)."""
        return max(1, sum(self._threads().values()))

    def _threads(self) -> dict[str, int]:
        if self._client.status != "running":
            return {}
        try:
            return dict(self._client.nthreads())
        except Exception:  # the scheduler unreachable: no worker known
            return {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        inner = self._inner.submit(fn, *args, **kwargs)
        outer: cf.Future = cf.Future()
        with self._lock:
            self._pending.add(outer)
        inner.add_done_callback(lambda done: self._settle(outer, done))
        outer.add_done_callback(lambda done: inner.cancel() if not inner.done() else None)
        return outer

    def _settle(self, outer: cf.Future, inner: cf.Future) -> None:
        if inner.cancelled():
            self._finish(outer, error=self._lost() or ClusterError(
                f"the Dask scheduler at '{self._address}' dropped a task; nothing was written"))
        elif inner.exception() is not None:
            self._finish(outer, error=self._translated(inner.exception()))
        else:
            self._finish(outer, result=inner.result())

    def _finish(self, outer: cf.Future, result: Any = None, error: BaseException | None = None) -> None:
        """Settle ``outer`` unless it already is (cancelled here, or failed by the watch). Never under
        the lock: settling runs ``outer``'s callbacks, which cancel the Dask task, whose callback
        settles ``outer`` again."""
        with self._lock:
            self._pending.discard(outer)
        try:
            if error is not None:
                outer.set_exception(error)
            else:
                outer.set_result(result)
        except cf.InvalidStateError:
            pass

    def _lost(self) -> ClusterError | None:
        """The error to give when this client has lost its scheduler (None while connected)."""
        if self._client.status in ("running", "newly-created"):
            return None
        return ClusterError(f"lost the Dask scheduler at '{self._address}' (it stopped, or the connection to it "
                            f"broke); nothing was written")

    def _translated(self, exc: BaseException) -> BaseException:
        """A cluster's failure as a :class:`ClusterError`; the task's own errors as they are."""
        name = type(exc).__name__
        if name == "KilledWorker":
            return ClusterError(f"a task was lost with every Dask worker that ran it ({exc}); nothing was written")
        if isinstance(exc, ImportError):
            return ClusterError(f"a Dask worker of '{self._address}' cannot load the task ({exc}): install the "
                                f"same coreg_plugin and its packages on every worker; nothing was written")
        if type(exc).__module__.split(".")[0] in ("distributed", "tornado"):
            return self._lost() or ClusterError(
                f"the Dask cluster at '{self._address}' failed: {name}: {exc}; nothing was written")
        return exc

    def _watch_workers(self) -> None:
        since: float | None = None
        while not self._closed.wait(0.5):
            with self._lock:
                waiting = bool(self._pending)
            if not waiting or self._threads():
                since = None
                continue
            since = time.monotonic() if since is None else since
            if time.monotonic() - since >= self._timeout_s:
                self._fail_pending(self._lost() or ClusterError(
                    f"no Dask worker at '{self._address}' for {self._timeout_s:g} s with tasks waiting "
                    f"(--dask-timeout); nothing was written"))
                since = None

    def _fail_pending(self, error: ClusterError) -> None:
        with self._lock:
            pending, self._pending = self._pending, set()
        for outer in pending:
            self._finish(outer, error=error)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed.set()
        try:
            self._inner.shutdown(wait=wait)
        except Exception as exc:
            # a client closed with its scheduler lost has nothing left to cancel: the run's own
            # error (a ClusterError) is what to tell, not Dask's refusal to send the cancel
            if type(exc).__name__ != "ClosedClientError":
                raise


#: Loggers of Dask's client and its event loop: silenced unless --log-to-console, as their failures
#: (reconnection attempts, a broken connection's traceback) are told in the run's one error line.
DASK_LOGGERS = ("distributed", "tornado", "asyncio")


@contextmanager
def _dask_executor(address: str | None, timeout_s: float, verbose: bool = False) -> Iterator[cf.Executor | None]:
    """An executor on the Dask cluster whose scheduler is at ``address`` (None without one)."""
    if address is None:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--dask-scheduler needs the Python package 'distributed' (pip install distributed)") from None
    with _silenced(() if verbose else DASK_LOGGERS), _connected(Client, address, timeout_s) as client:
        executor = _DaskExecutor(client, address, timeout_s)
        try:
            yield executor
        finally:
            executor.shutdown(wait=False)


@contextmanager
def _silenced(names: Sequence[str]) -> Iterator[None]:
    """The loggers ``names`` (and those below them) say nothing while the block runs."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.propagate, logger.handlers[:]) for logger in loggers]
    for logger in loggers:
        logger.handlers = [logging.NullHandler()]
        logger.propagate = False
    try:
        yield
    finally:
        for logger, (propagate, handlers) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate


@contextmanager
def _connected(client_class: Any, address: str, timeout_s: float) -> Iterator[Any]:
    """A Dask client of the scheduler at ``address`` with at least one worker, closed on exit."""
    try:
        client = client_class(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at '{address}': {' '.join(str(exc).split())}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=timeout_s)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"no Dask worker joined the scheduler at '{address}' within {timeout_s:g} s "
                               f"(--dask-timeout): {exc}") from None
        yield client
    finally:
        client.close()


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
        with _sigterm_unwinds(), terminal_bar(_stages(args), sys.stderr, enabled=not args.quiet) as bar:
            summary = {"align": _align, "apply": _apply, "stack": _stack}[args.command](args, bar)
    except ClusterError as exc:
        print(f"coreg: error: {exc}", file=sys.stderr)
        return EXIT_CLUSTER_FAILED
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
