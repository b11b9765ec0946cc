"""Aids for the demo, the tests and the benchmark: synthetic scenes with known misregistrations
(:mod:`.synthetic`) and a measure of the misregistration left between two images (:mod:`.evaluate`).
The pipeline never imports them."""
