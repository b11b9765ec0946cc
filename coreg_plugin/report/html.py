"""A self-contained HTML report of one Align Image Pair run, for people to look at.

:func:`write_report` writes one HTML file (pictures embedded as base64 PNG, no other files): the
model and its parameters, the summary's figures, what the quality figure means, and four pictures:

1. the quality figure's four terms;
2. the displacement (correction) measured at each tie point over the overlap, rejected points marked;
3. the residual of each tie point after the fitted correction;
4. a before/after checkerboard of the fixed image with the moving image, at full resolution, over a
   crop of at most ``CROP_PX`` pixels at the centre of the overlap.

Plots use matplotlib, imported when a report is written (``Figure`` + ``FigureCanvasAgg``, so no
global pyplot state or backend is touched). Rasters are read through ``WarpedVRT`` onto the small
crop grid only, so memory stays bounded whatever the image size.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT

from ..common.affines import apply, compose
from ..common.errors import InputError
from ..correction.geometry import shift_at
from ..estimate.registration import STATUS_OUTLIER, STATUS_USED

if TYPE_CHECKING:
    from ..estimate.registration import Registration


class AlignResult(Protocol):
    """What the report reads of a run of Align Image Pair (:class:`coreg_plugin.AlignResult`): its
    JSON-friendly summary and its registration."""

    summary: dict[str, Any]
    registration: Registration


#: Side (moving pixels) of the full-resolution checkerboard crop, at most.
CROP_PX = 384
#: Checkerboard squares per side of the crop.
CHECKER_SQUARES = 8
#: Pictures in a report: quality terms, displacements, residuals, checkerboard (and the local field
#: for the local model).
FIGURE_COUNT = 4
#: Title of the extra figure drawn when the model is local: the local part of the field.
LOCAL_FIELD_TITLE = "Local part of the correction (the field on top of the global affine)"

QUALITY_TERMS = (
    ("count", "Count", "inliers / 8, capped at 1: eight agreeing tie points are plenty for one model."),
    ("spread", "Spread", "how much of the overlap the inliers cover: sqrt(area of the inliers' convex hull / "
     "area of all windows' hull) / 0.5, capped at 1. Inliers bunched in one corner cannot pin down a model "
     "over the whole overlap."),
    ("rmse", "Fit", "exp(-(RMSE / 3 px)^2), the RMSE in pixels of the coarser of the two grids: 0.89 at "
     "1 px, 0.64 at 2 px, 0.37 at 3 px. Low when the tie points disagree as matches by chance do (tens of "
     "pixels); scene change between dates scatters them by 0.3 to 2 px."),
    ("correlation", "Correlation", "median tie-point reliability / 0.4, capped at 1. Reliability is the "
     "normalized correlation of the matched images after alignment: about 0.9 for the same scene, 0.3 to 0.7 "
     "across dates or bands, near 0 for unrelated content."),
)

STATUS_STYLE = {  # status -> (marker, colour, label)
    STATUS_USED: ("o", "#1f77b4", "used"),
    STATUS_OUTLIER: ("x", "#d62728", "outlier (rejected by the fit)"),
    "unreliable": ("+", "#ff7f0e", "unreliable (weak correlation)"),
    "no texture": (".", "#7f7f7f", "no texture"),
    "nodata": (".", "#bbbbbb", "nodata"),
}

MATPLOTLIB_HINT = (
    "the HTML report needs matplotlib: install it in the Python that runs Coreg "
    "(Debian/Ubuntu: sudo apt install python3-matplotlib; pip: python -m pip install matplotlib; "
    "QGIS on Windows and macOS ships with it)"
)


def _matplotlib() -> tuple[type, type]:
    """``(Figure, FigureCanvasAgg)``, or ``InputError`` with an install hint."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise InputError(MATPLOTLIB_HINT) from error
    return Figure, FigureCanvasAgg


def require_matplotlib() -> None:
    """Raise ``InputError`` with an install hint now if the report cannot be made (no matplotlib)."""
    _matplotlib()


def write_report(path: str | os.PathLike, result: AlignResult, output_image_file: str | None = None) -> str:
    """Write the HTML report of ``result`` (from :func:`align_image_pair`) at ``path``; return the path.

    ``output_image_file`` is where to read the aligned image for the checkerboard when it is not yet
    at ``result.summary["output_image"]`` (staged, not yet published).
    Raises ``InputError`` when matplotlib is missing or the folder of ``path`` does not exist.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"report '{path}': folder '{folder}' does not exist")
    figure_cls, canvas_cls = _matplotlib()

    def new_figure(width: float, height: float) -> Any:
        figure = figure_cls(figsize=(width, height), dpi=100, layout="constrained")
        canvas_cls(figure)
        return figure

    summary, reg = result.summary, result.registration
    images = [
        ("Quality figure and its terms", quality_figure(new_figure, summary)),
        ("Displacement measured at each tie point", displacement_figure(new_figure, reg, summary)),
        ("Residuals after the correction", residual_figure(new_figure, reg, summary)),
        ("Before / after: checkerboard of the fixed and moving images",
         checkerboard_figure(new_figure, summary, output_image_file)),
    ]
    if reg.local is not None:
        images.append((LOCAL_FIELD_TITLE, local_field_figure(new_figure, reg)))
    document = render_html(summary, reg, images)
    with open(path, "w", encoding="utf-8") as f:
        f.write(document)
    return path


def _finite_or_none(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if math.isfinite(value) else None


def tie_point_rows(result: AlignResult) -> list[dict[str, Any]]:
    """One row per tie-point window, in map coordinates of the moving image, for a point layer.

    Keys: ``x_map``, ``y_map`` (window centre), ``status``, ``used`` (1 or 0), ``dx_px``, ``dy_px``
    (correction there, moving pixels, right and down positive), ``dx_map``, ``dy_map`` (the same in
    map units, east and north positive for a north-up image), ``magnitude_px``, ``reliability``,
    ``residual_px``. Numbers that were not measured are ``None``.
    """
    with rasterio.open(result.summary["moving_image"]) as moving:
        transform = moving.transform
    rows = []
    for p in result.registration.tie_points:
        x_map, y_map = apply(transform, p.x, p.y)
        measured = math.isfinite(p.dx) and math.isfinite(p.dy)
        if measured:
            x_to, y_to = apply(transform, p.x + p.dx, p.y + p.dy)
            dx_map, dy_map = x_to - x_map, y_to - y_map
        else:
            dx_map = dy_map = float("nan")
        rows.append({
            "x_map": float(x_map), "y_map": float(y_map), "status": p.status, "used": int(p.status == STATUS_USED),
            "dx_px": _finite_or_none(p.dx), "dy_px": _finite_or_none(p.dy),
            "dx_map": _finite_or_none(dx_map), "dy_map": _finite_or_none(dy_map),
            "magnitude_px": _finite_or_none(math.hypot(p.dx, p.dy)) if measured else None,
            "reliability": _finite_or_none(p.reliability), "residual_px": _finite_or_none(p.residual_px),
        })
    return rows


# --- pictures -----------------------------------------------------------------------------------


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def quality_figure(new_figure: Any, summary: Mapping[str, Any]) -> str:
    """Bar chart of the four quality terms and the score (their product)."""
    quality = summary["quality"]
    names = [label for _, label, _ in QUALITY_TERMS] + ["Score"]
    values = [float(quality[key]) for key, _, _ in QUALITY_TERMS] + [float(quality["score"])]
    figure = new_figure(6.4, 2.6)
    axes = figure.add_subplot()
    colours = ["#9ecae1"] * len(QUALITY_TERMS) + ["#2ca02c" if quality.get("trusted", True) else "#d62728"]
    bars = axes.barh(names[::-1], values[::-1], color=colours[::-1])
    for bar, value in zip(bars, values[::-1]):
        axes.text(min(value, 0.97) + 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.3f}", va="center")
    axes.axvline(0.3, color="#555555", linestyle="--", linewidth=1)
    axes.text(0.3, len(names) - 0.45, " default threshold 0.3", fontsize=8, color="#555555")
    axes.set_xlim(0, 1.1)
    axes.set_xlabel("0 (bad) to 1 (good); score = product of the four terms")
    return _png(figure)


def _overlap_background(axes: Any, reg: Registration) -> None:
    """Draw the coarse moving overlap image in moving-pixel coordinates, if there is one."""
    coarse = reg.coarse
    image = getattr(coarse, "moving", None)
    if image is None or np.ndim(image) != 2 or not np.isfinite(image).any():
        return
    c0, r0 = reg.overlap[0], reg.overlap[1]
    height, width = image.shape
    factor = getattr(coarse, "factor", 1)
    low, high = np.nanpercentile(image, [2, 98])
    axes.imshow(image, cmap="gray", vmin=low, vmax=high if high > low else low + 1, alpha=0.55,
                extent=(c0, c0 + width * factor, r0 + height * factor, r0), interpolation="bilinear")


def _status_points(reg: Registration) -> dict[str, np.ndarray]:
    """Tie points by status as arrays of (x, y, dx, dy, residual)."""
    groups: dict[str, list[tuple[float, ...]]] = {}
    for p in reg.tie_points:
        groups.setdefault(p.status, []).append((p.x, p.y, p.dx, p.dy, p.residual_px))
    return {status: np.array(rows, dtype=float) for status, rows in groups.items()}


def _arrow_scale(reg: Registration, magnitudes: np.ndarray, reach: float = 0.5) -> float:
    """Pixels of arrow per pixel of displacement: the 90th-percentile arrow is ``reach`` windows long."""
    finite = magnitudes[np.isfinite(magnitudes)] if magnitudes.size else magnitudes
    typical = float(np.percentile(finite, 90)) if finite.size else 0.0
    return reach * reg.window_size / max(typical, 1e-3)


def _setup_overlap_axes(axes: Any, reg: Registration) -> None:
    c0, r0, c1, r1 = reg.overlap
    axes.set_xlim(c0, c1)
    axes.set_ylim(r1, r0)
    axes.set_aspect("equal")
    axes.set_xlabel("moving image column (px)")
    axes.set_ylabel("moving image row (px)")


def displacement_figure(new_figure: Any, reg: Registration, summary: Mapping[str, Any]) -> str:
    """Quiver of the correction measured at each used tie point; rejected points marked."""
    figure = new_figure(7.5, 6.5)
    axes = figure.add_subplot()
    _overlap_background(axes, reg)
    points = _status_points(reg)
    used = points.get(STATUS_USED, np.empty((0, 5)))
    measured = np.vstack([points[s] for s in (STATUS_USED, STATUS_OUTLIER) if s in points] or [np.empty((0, 5))])
    magnitudes = np.hypot(measured[:, 2], measured[:, 3]) if len(measured) else np.empty(0)
    scale = _arrow_scale(reg, magnitudes)
    if len(used):
        arrows = axes.quiver(used[:, 0], used[:, 1], used[:, 2], used[:, 3], np.hypot(used[:, 2], used[:, 3]),
                             cmap="viridis", angles="xy", scale_units="xy", scale=1 / scale, width=0.004)
        figure.colorbar(arrows, ax=axes, shrink=0.7, label="correction (px)")
        key = float(np.nanmedian(magnitudes)) if magnitudes.size else 1.0
        key = float(f"{key:.1g}") if key > 0 else 1.0
        axes.quiverkey(arrows, 0.8, 1.02, key, f"{key:g} px", labelpos="E", coordinates="axes")
    if STATUS_OUTLIER in points:
        out = points[STATUS_OUTLIER]
        axes.quiver(out[:, 0], out[:, 1], out[:, 2], out[:, 3], color="#d62728", angles="xy",
                    scale_units="xy", scale=1 / scale, width=0.003, alpha=0.8)
    for status, (marker, colour, label) in STATUS_STYLE.items():
        if status in points:
            xy = points[status]
            axes.scatter(xy[:, 0], xy[:, 1], marker=marker, c=colour, s=22 if status != STATUS_USED else 8,
                         label=f"{label} ({len(xy)})", zorder=3)
    _setup_overlap_axes(axes, reg)
    axes.set_title(f"Correction ({summary['model']} model), arrows x{scale:.0f}", fontsize=10, loc="left")
    axes.legend(loc="lower left", fontsize=8, framealpha=0.85)
    return _png(figure)


def local_field_figure(new_figure: Any, reg: Registration, arrows_per_side: int = 12) -> str:
    """The local part of a local model's correction over the overlap: its length (px) as an image
    of the field's nodes, and arrows (x right, y down, moving px) on a coarse subset of them."""
    field = reg.local
    figure = new_figure(7.5, 6.5)
    axes = figure.add_subplot()
    rows, cols = field.dx.shape
    step = field.step
    left, top = field.nodes * (-0.5, -0.5)
    magnitude = np.hypot(field.dx, field.dy)
    image = axes.imshow(magnitude, cmap="viridis", extent=(left, left + cols * step, top + rows * step, top),
                        interpolation="bilinear")
    figure.colorbar(image, ax=axes, shrink=0.7, label="local part (px)")
    c0, r0, c1, r1 = reg.overlap
    first = np.floor(~field.nodes * (c0, r0)).astype(int)
    last = np.ceil(~field.nodes * (c1, r1)).astype(int)
    stride = max(1, int(max(last - first) // arrows_per_side))
    node_rows = np.arange(max(0, first[1]), min(rows, last[1] + 1), stride)
    node_cols = np.arange(max(0, first[0]), min(cols, last[0] + 1), stride)
    if node_rows.size and node_cols.size:
        grid_rows, grid_cols = np.meshgrid(node_rows, node_cols, indexing="ij")
        xs, ys = field.nodes * (grid_cols.astype(float), grid_rows.astype(float))
        u, v = field.dx[grid_rows, grid_cols], field.dy[grid_rows, grid_cols]
        typical = float(np.percentile(np.hypot(u, v), 90))
        scale = 0.8 * stride * step / max(typical, 1e-3)  # the 90th-percentile arrow: 0.8 of their spacing
        axes.quiver(xs, ys, u, v, color="white", angles="xy", scale_units="xy", scale=1 / scale, width=0.004)
        axes.set_title(f"Local part of the correction, largest {field.max_local_px:.2f} px, arrows x{scale:.0f}",
                       fontsize=10, loc="left")
    _setup_overlap_axes(axes, reg)
    return _png(figure)


def residual_vectors(reg: Registration) -> np.ndarray:
    """(n, 5) array of x, y, residual dx, residual dy, status-is-used for measured tie points."""
    rows = []
    for p in reg.tie_points:
        if p.status in (STATUS_USED, STATUS_OUTLIER) and math.isfinite(p.dx) and math.isfinite(p.dy):
            model_dx, model_dy = shift_at(reg.h, np.array([p.x, p.y]))
            rows.append((p.x, p.y, p.dx - model_dx, p.dy - model_dy, p.status == STATUS_USED))
    return np.array(rows, dtype=float).reshape(-1, 5)


def residual_figure(new_figure: Any, reg: Registration, summary: Mapping[str, Any]) -> str:
    """Residual (measured minus fitted correction) per tie point: on the overlap and as a scatter."""
    from matplotlib.ticker import MaxNLocator  # available: write_report checked matplotlib

    rows = residual_vectors(reg)
    figure = new_figure(11, 5)
    map_axes, scatter_axes = figure.subplots(1, 2, width_ratios=[1.3, 1])
    _overlap_background(map_axes, reg)
    used, rejected = rows[rows[:, 4] == 1], rows[rows[:, 4] == 0]
    magnitude = np.hypot(rows[:, 2], rows[:, 3])
    scale = _arrow_scale(reg, magnitude, reach=0.8)
    if len(used):
        map_axes.scatter(used[:, 0], used[:, 1], s=6, c="#1f77b4", zorder=3)
        arrows = map_axes.quiver(used[:, 0], used[:, 1], used[:, 2], used[:, 3], np.hypot(used[:, 2], used[:, 3]),
                                 cmap="magma_r", angles="xy", scale_units="xy", scale=1 / scale, width=0.004)
        figure.colorbar(arrows, ax=map_axes, shrink=0.7, label="residual (px)")
    if len(rejected):
        map_axes.scatter(rejected[:, 0], rejected[:, 1], marker="x", c="#d62728", s=22, label="outlier", zorder=3)
        map_axes.legend(loc="lower left", fontsize=8)
    _setup_overlap_axes(map_axes, reg)
    map_axes.set_title(f"Residual at each tie point, arrows x{scale:.0f}", fontsize=10)

    rmse = summary.get("rmse_px")
    scatter_axes.axhline(0, color="#999999", linewidth=0.8)
    scatter_axes.axvline(0, color="#999999", linewidth=0.8)
    scatter_axes.scatter(used[:, 2], used[:, 3], s=14, c="#1f77b4", label=f"used ({len(used)})")
    if len(rejected):
        scatter_axes.scatter(rejected[:, 2], rejected[:, 3], s=22, marker="x", c="#d62728",
                             label=f"outlier ({len(rejected)})")
    if rmse:
        angle = np.linspace(0, 2 * np.pi, 200)
        scatter_axes.plot(rmse * np.cos(angle), rmse * np.sin(angle), color="#2ca02c", label=f"RMSE {rmse:.3f} px")
    limit = max(0.02, float(np.nanpercentile(np.abs(used[:, 2:4]), 98)) * 1.5 if len(used) else 0.1,
                (rmse or 0) * 1.3)
    scatter_axes.set_xlim(-limit, limit)
    scatter_axes.set_ylim(limit, -limit)
    scatter_axes.set_aspect("equal")
    scatter_axes.xaxis.set_major_locator(MaxNLocator(5, symmetric=True))
    scatter_axes.yaxis.set_major_locator(MaxNLocator(5, symmetric=True))
    scatter_axes.set_xlabel("residual x (px, right +)")
    scatter_axes.set_ylabel("residual y (px, down +)")
    scatter_axes.set_title("Residual components", fontsize=10)
    scatter_axes.legend(loc="upper right", fontsize=8)
    return _png(figure)


def crop_grid(summary: Mapping[str, Any], moving: rasterio.io.DatasetReader) -> tuple[Affine, int, int]:
    """The full-resolution crop (moving grid) at the overlap centre: transform, width, height."""
    centre = summary["overlap_centre_px"]
    side = min(CROP_PX, moving.width, moving.height)
    col0 = int(round(min(max(centre["x"] - side / 2, 0), moving.width - side)))
    row0 = int(round(min(max(centre["y"] - side / 2, 0), moving.height - side)))
    return compose(moving.transform, Affine.translation(col0, row0)), side, side


def read_on_grid(path: str, crs: Any, transform: Affine, width: int, height: int) -> np.ndarray:
    """Band 1 of ``path`` resampled onto the given small grid, float with NaN where invalid."""
    with rasterio.open(path) as source, WarpedVRT(source, crs=crs, transform=transform, width=width,
                                                  height=height, resampling=Resampling.bilinear) as vrt:
        return vrt.read(1, masked=True).astype(float).filled(np.nan)


def _stretch(values: np.ndarray) -> np.ndarray:
    """Values scaled to [0, 1] between their 2nd and 98th percentiles (NaN kept)."""
    if not np.isfinite(values).any():
        return values
    low, high = np.nanpercentile(values, [2, 98])
    return np.clip((values - low) / (high - low if high > low else 1.0), 0, 1)


def checkerboard(first: np.ndarray, second: np.ndarray, squares: int = CHECKER_SQUARES) -> np.ndarray:
    """``first`` on the dark squares, ``second`` on the light ones (same shape)."""
    rows, cols = np.indices(first.shape)
    size = max(1, math.ceil(max(first.shape) / squares))
    return np.where(((rows // size) + (cols // size)) % 2 == 0, first, second)


def checkerboard_figure(new_figure: Any, summary: Mapping[str, Any], output_image_file: str | None = None) -> str:
    """Fixed image alternating with the moving image, before and after the correction (the aligned
    image read from ``output_image_file``, default the summary's ``output_image``)."""
    with rasterio.open(summary["moving_image"]) as moving:
        crs = moving.crs
        transform, width, height = crop_grid(summary, moving)
    fixed = _stretch(read_on_grid(summary["fixed_image"], crs, transform, width, height))
    before = _stretch(read_on_grid(summary["moving_image"], crs, transform, width, height))
    panels = [("before: fixed / moving", before)]
    output = output_image_file or summary.get("output_image")
    if output and os.path.exists(output):
        panels.append(("after: fixed / aligned", _stretch(read_on_grid(output, crs, transform, width, height))))
    figure = new_figure(5 * len(panels), 5.4)
    size = max(1, math.ceil(width / CHECKER_SQUARES))
    for axes, (title, other) in zip(np.atleast_1d(figure.subplots(1, len(panels))), panels):
        axes.imshow(checkerboard(fixed, other), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for k in range(size, width, size):
            axes.axvline(k - 0.5, color="#ffcc00", linewidth=0.4, alpha=0.6)
            axes.axhline(k - 0.5, color="#ffcc00", linewidth=0.4, alpha=0.6)
        axes.set_title(title, fontsize=10)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"{width} x {height} moving pixels at full resolution, at the overlap centre: "
                    "edges should run on across the squares' borders after alignment", fontsize=9)
    return _png(figure)


# --- HTML -------------------------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; font-size: 90%; }
th { background: #f0f0f0; }
.bad { color: #b00; font-weight: bold; } .good { color: #070; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
code { font-size: 90%; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") if math.isfinite(value) else str(value)
    return str(value)


def _table(rows: Iterable[tuple[str, Any]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def model_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The model and its parameters as (name, HTML value) rows."""
    correction = summary["correction"]
    matrix = correction["matrix_px"]
    rows = [("model", _e(summary["model"]))]
    for key, label in (("rotation_deg", "rotation (degrees)"), ("scale_x", "scale x"), ("scale_y", "scale y"),
                       ("shear", "shear")):
        if key in correction:
            rows.append((label, _e(_number(correction[key], 6))))
    rows.append(("correction matrix (moving px, 2 x 3)",
                 "<code>" + "<br>".join(_e(" ".join(_number(v, 8) for v in row)) for row in matrix) + "</code>"))
    rows.append(("corrected geotransform (GDAL order)",
                 "<code>" + _e(", ".join(_number(v, 8) for v in correction["geotransform"])) + "</code>"))
    local = summary.get("local")
    if local:
        rows.append(("local part of the correction, largest (moving px)", _e(_number(local["max_local_px"]))))
        rows.append(("local field node spacing (moving px)", _e(_number(local["node_step_px"], 2))))
        rows.append(("note", _e("the matrix and geotransform are the global affine part; the local field "
                                "is added to it, and the residuals shown are held-out residuals")))
    return rows


def figure_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary's figures as (name, HTML value) rows."""
    tie = summary["tie_points"]
    quality = summary["quality"]
    trusted = quality.get("trusted", True)
    return [
        ("moving image", _e(summary["moving_image"])),
        ("fixed image", _e(summary["fixed_image"])),
        ("output image", _e(summary["output_image"])),
        ("shift x, y (moving px, right and down +)",
         _e(f"{_number(summary['shift_px']['x'])}, {_number(summary['shift_px']['y'])}")),
        ("shift x, y (map units, east and north +)",
         _e(f"{_number(summary['shift_m']['x'])}, {_number(summary['shift_m']['y'])}")),
        ("overlap centre (moving px)",
         _e(f"{summary['overlap_centre_px']['x']}, {summary['overlap_centre_px']['y']}")),
        ("RMSE of the fit (px)", _e(_number(summary["rmse_px"]))),
        ("tie-point windows / found / used",
         _e(f"{tie['windows']} / {tie['found']} / {tie['used']}")),
        ("window size (px)", _e(tie["window_size_px"])),
        ("quality score", f"<span class=\"{'good' if trusted else 'bad'}\">{_e(quality['score'])}</span>"
         + ("" if trusted else " (below the threshold: output forced, not trusted)")),
        ("iterations (converged)", _e(f"{summary['iterations']} ({'yes' if summary['converged'] else 'no'})")),
        ("output grid", _e(summary["output_grid"])),
        ("resampling", _e(summary["resampling"])),
        ("output nodata", _e(summary["output_nodata"])),
        ("elapsed (s)", _e(summary["elapsed_s"])),
    ]


def verdict_html(summary: Mapping[str, Any]) -> str:
    """The verdict, the uncertainty of the correction and the model choice with every candidate's
    held-out RMSE."""
    choice = summary.get("model_choice")
    if not choice:
        return ""
    bound = summary["uncertainty_px"]
    estimated = summary["estimated_shift_px"]
    rows = [
        ("verdict", f"<b>{_e(summary['verdict'])}</b>: {_e(summary['message'])}"),
        ("estimated correction at the overlap centre (px)",
         _e(f"{_number(estimated['x'])}, {_number(estimated['y'])}")),
        ("95 % uncertainty of the correction (px): centre / corners", _e(_bound_text(bound))),
        ("RMSE of the fit: moving px / coarser grid's px / ground metres",
         _e(f"{_number(summary['rmse_px'])} / {_number(summary['rmse_coarse_px'])} / {_number(summary['rmse_m'])}")),
    ]
    candidates = "".join(
        f"<tr><td>{_e(c['model'])}{' (chosen)' if c['model'] == choice['chosen'] else ''}</td>"
        f"<td>{_e(_number(c['held_out_rmse_px']))}</td></tr>" for c in choice["candidates"]
    )
    return (
        f"{_table(rows)}<p>Candidates, simplest first, with the RMSE of each tie point's residual when the "
        "model is fitted without it (10-fold cross-validation on the inliers). A more complex model wins only "
        "when it is clearly better on these held-out points; no correction (identity) wins when the fitted "
        "correction would not improve the image with 95 % confidence (below about 1.34 times its bound).</p>"
        f"<table><tr><th>model</th><th>held-out RMSE (px)</th></tr>{candidates}</table>"
        f"<p><b>Why:</b> {_e(choice['reason'])}</p>"
    )


#: The report's accuracy section: its title, and (key, label, the standard figure it corresponds to).
ACCURACY_TITLE = "Accuracy (standard figures)"
ACCURACY_FIGURES = (
    ("rmse_fit", "RMSE of the fit (radial)", "Landsat GEOMETRIC_RMSE_MODEL"),
    ("rmse_fit_x", "RMSE of the fit, x (columns)", "Landsat GEOMETRIC_RMSE_MODEL_X"),
    ("rmse_fit_y", "RMSE of the fit, y (rows)", "Landsat GEOMETRIC_RMSE_MODEL_Y"),
    ("rmse_verify", "RMSE on held-out tie points (radial)", "Landsat GEOMETRIC_RMSE_VERIFY"),
    ("ce90", "CE90 of the held-out residuals", "circular error, 90 %"),
)


def accuracy_html(summary: Mapping[str, Any]) -> str:
    """The summary's standard accuracy figures (``accuracy``) as a table: each figure in moving
    pixels, in pixels of the coarser grid (moving px / ``coarse_pixel_factor``) and in metres, and
    the CEOS-ARD threshold's outcome; empty when the summary has none. "n/a": not computable."""
    accuracy = summary.get("accuracy")
    if not accuracy:
        return ""
    factor = accuracy.get("coarse_pixel_factor") or 1.0

    def cell(value: float | None) -> str:
        return f"<td>{_e('n/a' if value is None else _number(value))}</td>"

    def coarse(value: float | None) -> float | None:
        return None if value is None else round(value / factor, 4)

    rows = "".join(
        f"<tr><th>{_e(label)}</th>{cell(accuracy.get(f'{key}_px'))}{cell(coarse(accuracy.get(f'{key}_px')))}"
        f"{cell(accuracy.get(f'{key}_m'))}<td>{_e(standard)}</td></tr>" for key, label, standard in ACCURACY_FIGURES
    )
    head = ("<tr><th>figure</th><th>moving px</th><th>coarser grid's px</th><th>metres</th>"
            "<th>standard figure</th></tr>")
    meets, size = accuracy.get("ceos_ard"), accuracy.get("pixel_size_m")
    threshold = _number(accuracy.get("ceos_ard_threshold_coarse_px"))
    verdict = ("<span class=\"good\">meets it</span>" if meets else
               "<span class=\"bad\">does not meet it</span>" if meets is False else "unknown (too few tie points)")
    return (
        f"<table>{head}{rows}</table>"
        f"<p><b>CEOS-ARD geometric threshold</b> ({_e(threshold)} px radial RMSE, judged on the held-out RMSE "
        f"in pixels of the coarser grid): {verdict}.</p>"
        f"<p>The figures judge the model applied (<code>{_e(accuracy.get('model'))}</code>; for "
        "<code>identity</code>, already aligned, the residuals are those of no correction). The fit RMSE is "
        f"computed on the {_e(accuracy.get('points_fit'))} tie points the model was fitted to; the held-out "
        f"RMSE and CE90 on {_e(accuracy.get('points_verify'))} residuals of tie points left out of the fit "
        "(10-fold cross-validation), as check points. A moving pixel is "
        f"{_e(_number(size) + ' m' if size is not None else 'of unknown size in metres')}; a pixel of the "
        f"coarser grid is {_e(_number(float(factor), 3))} moving px.</p>"
    )


def _bound_text(bound: Mapping[str, Any]) -> str:
    """The 95 % bound at the centre and the corners, or why it is not known."""
    if not bound.get("known", True) or bound["centre"] is None:
        return "unknown: too few tie points for the model to bound its uncertainty"
    return f"{_number(bound['centre'])} / " + ", ".join(_number(b) for b in bound["corners"])


def quality_html(summary: Mapping[str, Any]) -> str:
    """What the quality figure is, with this run's terms."""
    quality = summary["quality"]
    items = "".join(
        f"<li><b>{_e(label)}</b> = {_e(quality[key])}: {_e(text)}</li>" for key, label, text in QUALITY_TERMS
    )
    return (
        "<p>The quality score is the <b>product</b> of four terms, each between 0 and 1, so any one weakness "
        f"pulls it down. Here it is <b>{_e(quality['score'])}</b>.</p><ul>{items}</ul>"
        "<p>Below the minimum quality (default 0.3) the run fails and names the weakest term, unless forced; "
        "a forced result is marked untrusted.</p>"
    )


def tie_point_table(reg: Registration) -> str:
    """Every window: position, correction, reliability, residual and status (collapsed)."""
    rows = "".join(
        f"<tr><td>{p.x:.1f}</td><td>{p.y:.1f}</td><td>{_e(_number(p.dx))}</td><td>{_e(_number(p.dy))}</td>"
        f"<td>{_e(_number(p.reliability, 3))}</td><td>{_e(_number(p.residual_px))}</td><td>{_e(p.status)}</td></tr>"
        for p in reg.tie_points
    )
    head = ("<tr><th>x (px)</th><th>y (px)</th><th>dx (px)</th><th>dy (px)</th><th>reliability</th>"
            "<th>residual (px)</th><th>status</th></tr>")
    return (f"<details><summary>All {len(reg.tie_points)} tie-point windows</summary>"
            f"<table>{head}{rows}</table></details>")


def render_html(summary: Mapping[str, Any], reg: Registration, images: list[tuple[str, str]]) -> str:
    """The whole report document."""
    notes = "".join(f"<li>{_e(n)}</li>" for n in summary.get("notes") or [])
    pictures = "".join(
        f"<h3>{_e(title)}</h3><img alt=\"{_e(title)}\" src=\"data:image/png;base64,{data}\">" for title, data in images
    )
    title = f"Coreg report: {os.path.basename(summary['moving_image'])} onto {os.path.basename(summary['fixed_image'])}"
    return (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{_e(title)}</h1>"
        f"<h2>Figures</h2>{_table(figure_rows(summary))}"
        f"<h2>Verdict and model choice</h2>{verdict_html(summary)}"
        + (f"<h2>{_e(ACCURACY_TITLE)}</h2>{accuracy_html(summary)}" if summary.get("accuracy") else "")
        + f"<h2>Model</h2>{_table(model_rows(summary))}"
        + (f"<h2>Notes</h2><ul>{notes}</ul>" if notes else "")
        + f"<h2>Quality</h2>{quality_html(summary)}"
        f"<h2>Pictures</h2>"
        "<p>Arrows show the correction: where the content of the moving image at the arrow's tail truly lies "
        "(right and down positive, in moving pixels), magnified as stated.</p>"
        f"{pictures}<h2>Tie points</h2>{tie_point_table(reg)}"
        "</body></html>"
    )
