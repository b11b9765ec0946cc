"""``python -m coreg_plugin``: see :mod:`.cli`."""

import os
import sys

# Tie-point matching runs many small matrix products; BLAS threads only add overhead there.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from coreg_plugin.cli import main  # noqa: E402  (after the BLAS setting, which must precede numpy)

sys.exit(main())
