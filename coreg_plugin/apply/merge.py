"""How overlapping inputs are merged into one raster: rasterio's merge methods, plus ``mean``.

A method is a callable with rasterio's signature ``method(merged_data, new_data, merged_mask,
new_mask, **kwargs)`` that updates ``merged_data`` in place; masks are True where there is *no*
data. Any such callable (for instance one written for ``rasterio.merge.merge``) can be passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from rasterio.merge import MERGE_METHODS as RASTERIO_METHODS

from ..common.errors import InputError
from ..common.names import DEFAULT_MERGE_METHOD, MERGE_METHOD_NAMES  # noqa: F401 (DEFAULT_MERGE_METHOD re-exported)

MergeCallable = Callable[..., None]


def check_merge_method(method: str | MergeCallable) -> str | MergeCallable:
    """Return ``method`` if it is a known name or a callable; raise ``InputError`` otherwise."""
    if callable(method) or method in MERGE_METHOD_NAMES:
        return method
    raise InputError(
        f"unknown merge method '{method}': choose one of {', '.join(MERGE_METHOD_NAMES)} or pass a callable"
    )


def merge_blocks(
    layers: Sequence[np.ndarray | None], method: str | MergeCallable, roff: int = 0, coff: int = 0,
    shape: tuple[int, int, int] | None = None, dtypes: Sequence[np.dtype] | None = None,
) -> np.ndarray:
    """Merge float layers (each bands x rows x cols, NaN = no data; None: an input without data
    in the block, of ``shape`` and float type ``dtypes[i]``), in input order; NaN where none has data.

    ``roff``/``coff`` (the block's offset in the output, pixels) are passed on to callables, as
    ``rasterio.merge.merge`` does. A callable is called for every input, one without data too (with
    zeros, all masked), as for a layer all no data.
    """
    if method == "mean":
        total = merge_blocks(layers, "sum", shape=shape, dtypes=dtypes)
        return total / merge_blocks(layers, "count", shape=shape, dtypes=dtypes)
    copy = RASTERIO_METHODS[method] if isinstance(method, str) else method
    shape = next((layer.shape for layer in layers if layer is not None), shape)
    merged = np.zeros(shape, dtype=np.float64)
    merged_mask = np.ones(shape, dtype=bool)
    for index, layer in enumerate(layers):
        if layer is None:  # no data: made for the call alone, one at a time
            dtype = np.float64 if dtypes is None else dtypes[index]
            new_mask, values = np.ones(shape, dtype=bool), np.zeros(shape, dtype=dtype)
        else:
            new_mask = np.isnan(layer)
            values = np.where(new_mask, 0.0, layer)
        copy(merged, values, merged_mask, new_mask, index=index, roff=roff, coff=coff)
        merged_mask &= new_mask
    merged[merged_mask] = np.nan
    return merged
