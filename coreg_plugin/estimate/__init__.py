"""Estimating how a moving raster is misregistered against a fixed one, and how sure that is.

The stages of :func:`.registration.register`, in order:

1. :mod:`.coarse` (with :mod:`.rotation_scale`): one match of the whole overlap at reduced
   resolution, rotation and scale by Fourier-Mellin;
2. :mod:`.tiepoints` (with :mod:`.lattice`, :mod:`.proxies`, :mod:`.correlation`): a grid of windows
   matched to a hundredth of a pixel;
3. :mod:`.model_fit` and :mod:`.local_fit`: the models fitted to the tie points, outliers rejected;
4. :mod:`.model_choice`: the model the held-out tie points support;
5. :mod:`.uncertainty`, :mod:`.quality` and :mod:`.verdict`: the 95 % bound, the quality gate and
   the verdict (corrected, already aligned, refused).
"""
