"""Reading and writing rasters.

- :mod:`.raster_source`: opening an input once, checking it, reading its valid pixels;
  :mod:`.gdal_names`: plain paths, virtual file systems and subdatasets.
- :mod:`.warp` (with :mod:`.separable` and :mod:`.shared_reads`): resampling a raster onto any grid,
  reading only what that grid needs; the one warp primitive of the package.
- :mod:`.formats`: which GDAL driver writes an output and whether it can hold the data;
  :mod:`.outputs`: checking outputs before any work, staging and publishing them;
  :mod:`.writer`: the block writer; :mod:`.unchanged`: a raster copied as it is.
"""
