"""The correction: what a registration found, as a value that can be saved, read and applied.

- :mod:`.file`: the :class:`~.file.Correction` (a model in map coordinates of a named CRS) and its
  versioned JSON file (``docs/correction-schema.md``);
- :mod:`.local_field`: the local model's smooth displacement field on top of the global affine;
- :mod:`.geometry`: conversions between models, geotransforms and overlaps;
- :mod:`.gcp`: the tie points as a QGIS Georeferencer ``.points`` file.
"""
