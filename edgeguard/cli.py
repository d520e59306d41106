"""The `edgeguard` command: thin over the public API (parse, call, print).

Results go to stdout; progress, warnings and errors go to stderr. Exit codes:
0 every input was screened; 1 with `--fail-on flagged`, when a digit was flagged (or an image's digits could
not be separated, edgeguard.sheet);
2 an input could not be read (the others are still screened and reported) or a bad option;
3 the model bundle or the execution provider could not be loaded (a provider name onnxruntime does not know is a
bad option: 2). A reader that goes away (``| head -1``) ends the command quietly with 0.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import typer
from rich.console import Console

from edgeguard import __version__
from edgeguard.contract import MAX_K

if TYPE_CHECKING:  # imported where used: `edgeguard --version` loads no models
    from rich.progress import Progress, Task

    from edgeguard.guard import Guard
    from edgeguard.webcam import FrameResult


class QuietConsole(Console):
    """A rich Console that ends the command quietly, with exit 0, when its reader goes away
    (``edgeguard detect ... --json | head -1``): rich's own handler exits 1, the code of ``--fail-on flagged``."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _silence(self.file)
        raise SystemExit(0)


def _silence(stream: IO[str]) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that what is still buffered (and the interpreter's
    flush at exit) goes nowhere instead of raising BrokenPipeError again."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (typer's CliRunner): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="EdgeGuard: should you trust a classifier's answer on this digit image?")
out = QuietConsole(highlight=False, soft_wrap=True)
err = QuietConsole(stderr=True, highlight=False, soft_wrap=True)

EXIT_FLAGGED, EXIT_INPUT, EXIT_BUNDLE = 1, 2, 3
BATCH = 256
#: `detect --kernels auto` uses the numba kernels from this many images on, the NumPy twins below it:
#: importing numba and loading its cached kernels costs about a second, more than numba saves on a
#: few hundred images (benchmarks/latency.py, cold start and kernel sections).
NUMBA_MIN_IMAGES = 1024
PROVIDERS_HELP = "auto, cpu, cuda, or onnxruntime provider names, comma-separated (CPUExecutionProvider)."


class Kernels(str, Enum):
    auto = "auto"
    numba = "numba"
    numpy = "numpy"


class FailOn(str, Enum):
    never = "never"
    flagged = "flagged"


class CalibrationChoice(str, Enum):
    camera = "camera"
    digits = "digits"


class DigitsMode(str, Enum):
    auto = "auto"
    one = "one"
    all = "all"


def _version(value: bool) -> None:
    if value:
        out.print(f"edgeguard {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show warnings and progress details."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s", force=True)


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"error: {message}", markup=False)
    return typer.Exit(code)


def load_guard(bundle: Path | None, providers: str, k: int | None = None, seed: int = 0,
               alpha: float = 0.01, threads: int = 1, kernels: str = "numba", calibration: str = "digits") -> Guard:
    from edgeguard.errors import EdgeGuardError
    from edgeguard.guard import Guard

    try:
        return Guard.load(bundle, providers=providers, k=k, seed=seed, alpha=alpha, threads=threads, kernels=kernels,
                          calibration=calibration)
    except (TypeError, ValueError) as e:  # ProviderChoiceError too: a bad option
        raise fail(str(e), EXIT_INPUT) from None
    except EdgeGuardError as e:  # BundleError, ProviderError
        raise fail(str(e), EXIT_BUNDLE) from None


def _progress(total: int) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:  # rich's speed: over the last 30 s
            return Text(f"{task.speed:,.0f} images/s" if task.speed else "")

    return Progress(TextColumn("screening"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                    console=err, transient=True, disable=total <= 8 or not err.is_terminal)


@app.command()
def detect(
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively), glob patterns, "
                                                "- (one image's bytes on stdin), .npy/.npz batches (N,28,28)."),
    k: int | None = typer.Option(None, "--k", min=1, max=MAX_K, help="Samples per image (default: the bundle's)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the latent sampling."),
    alpha: float = typer.Option(0.01, "--alpha", min=1e-6, max=0.5, help="False-alarm rate on clean digits."),
    providers: str = typer.Option("auto", "--providers", help=PROVIDERS_HELP),
    bundle: Path | None = typer.Option(None, "--bundle", help="Model bundle folder (default: the shipped one)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per digit (per image of one digit), "
                                                       "a chunk at a time; a refused input is {source, error}."),
    out_file: str | None = typer.Option(None, "--out", help="Write the records to this .jsonl, .csv or .parquet "
                                                            "file (parquet: pip install 'edgeguard\\[parquet]')."),
    fdr: float | None = typer.Option(None, "--fdr", min=1e-6, max=1.0,
                                     help="Also select, at the end, the digits Benjamini-Hochberg picks at this "
                                          "false-discovery rate over the run's p-values (a final JSON record "
                                          "{fdr, selected}; verdicts still stream). --fail-on flagged then uses "
                                          "the selection."),
    fail_on: FailOn = typer.Option(FailOn.never, "--fail-on",
                                   help="'flagged': exit 1 when a digit is flagged (with --fdr: selected) or an "
                                        "image's digits cannot be separated."),
    kernels: Kernels = typer.Option(Kernels.auto, "--kernels",
                                    help=f"numba, numpy, or auto: numba from {NUMBA_MIN_IMAGES} images on."),
    wide: bool = typer.Option(False, "--wide", help="Show the table's every column and full paths, however wide "
                                                    "(a terminal otherwise gets a table that fits its width)."),
    digits: DigitsMode = typer.Option(DigitsMode.auto, "--digits",
                                      help="one: one verdict per image; all: one per digit found; auto: one per digit "
                                           "when an image holds several, else one (docs/pages.md)."),
    ray: str | None = typer.Option(None, "--ray", metavar="[ADDRESS]",
                                   help="Screen on Ray Data (pip install 'edgeguard\\[ray]'): alone, a local Ray "
                                        "instance; auto, the cluster `ray start` joined; or HOST:PORT. Records go "
                                        "out as JSON lines without --out (docs/scale.md)."),
    ray_actors: int | None = typer.Option(None, "--ray-actors", min=1,
                                          help="Ray actors, one Guard and one CPU each (default: the cluster's CPUs)."),
) -> None:
    """Screen digit images and say whether the classifier's answer can be trusted.

    An image holding several digits (a sheet, a ZIP code) gets one result per digit, in reading order, with its box.
    Inputs are read, screened and written a chunk at a time; a one-line summary ends on stderr.
    """
    from edgeguard.cli_detect import run_detect
    from edgeguard.detect_inputs import count_inputs, expand_inputs
    from edgeguard.errors import InputError

    files, problems = expand_inputs(paths)
    for raw, problem in problems:
        err.print(f"error: {InputError(problem, raw)}", markup=False)
    on_ray = _ray_options(ray, ray_actors, bundle, providers, k, seed, alpha, digits.value, kernels.value)
    total = count_inputs(files)
    if kernels is Kernels.auto:
        kernels = Kernels.numba if total >= NUMBA_MIN_IMAGES else Kernels.numpy
    if kernels is Kernels.numba and on_ray is None:
        from edgeguard.kernel_cache import kernels_cached

        if not kernels_cached():
            err.print("note: compiling the numba kernels (the first run after an install, about 10 s; the NumPy "
                      "kernels screen meanwhile); later runs load them from numba's cache", markup=False)
    numba = kernels is Kernels.numba and on_ray is None  # loaded in the background; first chunks: NumPy twins
    guard = load_guard(bundle, providers, k, seed, alpha, kernels="numpy" if numba else kernels.value)
    if guard.calibration is None:
        raise fail(f"{guard.bundle.path}: the bundle is not calibrated; run `python -m export.calibrate`",
                   EXIT_BUNDLE)
    try:
        run = run_detect(guard, files, problems, digits=digits.value, as_json=as_json, wide=wide, out_path=out_file,
                         fdr=fdr, total=total, numba=numba, ray=on_ray)
    except InputError as e:  # --out that cannot be written
        raise fail(str(e), EXIT_INPUT) from None
    if problems:
        raise typer.Exit(EXIT_INPUT)
    flagged = run.flagged if fdr is None else bool(run.selected) or run.verdicts["unseparable"] > 0
    if fail_on is FailOn.flagged and flagged:
        raise typer.Exit(EXIT_FLAGGED)


def _ray_options(address: str | None, actors: int | None, bundle: Path | None, providers: str, k: int | None,
                 seed: int, alpha: float, digits: str, kernels: str) -> dict[str, Any] | None:
    """``screen_on_ray``'s keyword arguments for ``--ray ADDRESS``, once connected; None without ``--ray``."""
    if address is None:
        return None
    from edgeguard.errors import InputError
    from edgeguard.ray_screen import connect

    try:
        connect(address)
    except InputError as e:
        raise fail(str(e), EXIT_INPUT) from None
    return {"actors": actors, "bundle": None if bundle is None else str(bundle.resolve()), "providers": providers,
            "k": k, "seed": seed, "alpha": alpha, "digits": digits,
            "kernels": "numpy" if kernels == "numpy" else "numba"}


@app.command()
def info(
    bundle: Path | None = typer.Option(None, "--bundle", help="Model bundle folder (default: the shipped one)."),
    providers: str = typer.Option("auto", "--providers", help=PROVIDERS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Show the bundle (its name, id and date), its measured metrics and robustness figures, the execution
    providers and versions."""
    from edgeguard.cli_info import run_info

    run_info(load_guard(bundle, providers), as_json)


@app.command()
def webcam(
    source: str = typer.Option("0", "--source", "-s", help="Camera index (0, 1, ...), a video file or a stream URL."),
    no_display: bool = typer.Option(False, "--no-display", help="Open no window (automatic when there is no display)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per frame on stdout."),
    record: Path | None = typer.Option(None, "--record", help="Write the annotated video to this file (mp4v)."),
    max_digits: int = typer.Option(16, "--max-digits", min=1, max=64, help="Most digits screened per frame."),
    every: int = typer.Option(1, "--every", min=1, help="Screen every Nth frame (reuse the results in between)."),
    alpha: float = typer.Option(0.01, "--alpha", min=1e-6, max=0.5, help="False-alarm rate on clean digits."),
    calibration: CalibrationChoice | None = typer.Option(
        None, "--calibration", help="p-values calibrated on filmed digits (camera) or on 28x28 images (digits); "
                                    "default: camera when the bundle has that calibration, else digits."),
    k: int | None = typer.Option(None, "--k", min=1, max=MAX_K, help="Samples per digit (default: the bundle's)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the latent sampling."),
    providers: str = typer.Option("auto", "--providers", help=PROVIDERS_HELP),
    bundle: Path | None = typer.Option(None, "--bundle", help="Model bundle folder (default: the shipped one)."),
) -> None:
    """Screen the digits seen by a camera, in a video file or a stream, live: a box per digit, coloured by verdict.

    q or Esc in the window (or Ctrl-C) quits. Exit 0 when the video ends or you quit; 2 when the source
    cannot be opened or read, or the --record file cannot be written.
    """
    from edgeguard import webcam as cam
    from edgeguard.errors import InputError

    display = not no_display
    if display:
        display, why = cam.display_available()
        if not display:
            err.print(f"note: {why}; running without a window", markup=False)
    guard = load_guard(bundle, providers, k, seed, alpha,
                       calibration=calibration.value if calibration else cam.default_calibration(bundle))
    if guard.calibration is None:
        raise fail(f"{guard.bundle.path}: the bundle is not calibrated; run `python -m export.calibrate`",
                   EXIT_BUNDLE)

    def on_frame(result: FrameResult) -> None:
        if as_json:
            out.print(json.dumps(result.to_dict()), markup=False)
        elif not display and result.screened and result.digits:
            digits = "  ".join(" ".join(cam.describe(d)) for d in result.digits)
            out.print(f"frame {result.index} ({result.time_s:.2f} s): {digits}", markup=False)
        else:
            return
        try:
            out.file.flush()
        except BrokenPipeError:
            out.on_broken_pipe()

    try:
        summary = cam.run(guard, source, display=display, record=record, max_digits=max_digits, every=every,
                          on_frame=on_frame)
    except InputError as e:
        raise fail(str(e), EXIT_INPUT) from None
    for note in summary.notes:
        err.print(f"note: {note}", markup=False)
    err.print(summary.message, markup=False)


@app.command()
def calibrate(
    paths: list[str] = typer.Argument(..., help="Clean digit images: files, folders (recursive), globs, .npy batches "
                                                "shaped (N,28,28)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the new bundle: new, empty, or (--force) a bundle."),
    bundle: Path | None = typer.Option(None, "--bundle", help="Base bundle (default: the shipped one)."),
    alpha: float = typer.Option(0.01, "--alpha", min=1e-6, max=0.5,
                                help="False-alarm rate to calibrate for; needs at least 4/alpha images."),
    labels: Path | None = typer.Option(None, "--labels", help="'path,label' lines or one label per image in order "
                                                              "(default: folder names 0-9, when every image has one)."),
    k: int | None = typer.Option(None, "--k", min=1, max=MAX_K, help="Samples per image (default: the bundle's)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the latent sampling."),
    providers: str = typer.Option("auto", "--providers", help=PROVIDERS_HELP),
    kernels: Kernels = typer.Option(Kernels.auto, "--kernels",
                                    help=f"numba, numpy, or auto: numba from {NUMBA_MIN_IMAGES} images on."),
    force: bool = typer.Option(False, "--force", help="Replace the bundle already in --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Fit the calibration on your own clean digits and write a new bundle (then: detect --bundle DIR).

    Exit 0 when the bundle was written; 2 when an input or the labels cannot be read, there are too few images for
    --alpha, --out is refused or cannot be written (nothing is written then); 3 when the base bundle cannot be loaded.
    """
    from edgeguard.cli_calibrate import run_calibrate

    run_calibrate(paths, out_dir, bundle=bundle, alpha=alpha, labels=labels, k=k, seed=seed, providers=providers,
                  kernels=kernels.value, force=force, as_json=as_json)


def bare_ray(argv: list[str]) -> list[str]:
    """``--ray`` with no address (last, or before another option) as ``--ray=local``: a local Ray instance."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-") and out[i + 1] != "-"):
            out[i] = "--ray=local"
    return out


def main() -> None:
    """Console-script entry point: no traceback reaches the user."""
    sys.argv = bare_ray(sys.argv)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug: say so in one line, keep the traceback for debugging
        if os.environ.get("EDGEGUARD_DEBUG"):
            raise
        err.print(f"edgeguard: internal error: {type(e).__name__}: {e} (set EDGEGUARD_DEBUG=1 for details)",
                  markup=False)
        sys.exit(70)
