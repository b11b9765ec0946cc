"""Small helpers every stage shares: the errors, the option names and defaults, progress and
cancellation, stage timings, running calls on executors, and composing ``Affine`` transforms.

Nothing here knows about rasters, corrections or registrations.
"""
