"""Applying a correction: every output pixel warped from where its content truly lies.

- :mod:`.correct`: a correction re-expressed on any raster of the scene and written through it;
- :mod:`.blocks`: the block task every output goes through (warp each input onto one block of the
  output grid, then merge or stack), picklable for any executor;
- :mod:`.local_warp`: the local model's field, and the map onto a grid in another CRS, as tiles of
  affine maps for GDAL's warper;
- :mod:`.merge`: how overlapping inputs are merged; :mod:`.output_grid`: which grid is written.
"""
