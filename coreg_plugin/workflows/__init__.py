"""The three jobs, each a pipeline of the stages below it: estimate -> correction -> apply -> write.

- :mod:`.align`: Align Image Pair (:func:`~.align.align_image_pair`);
- :mod:`.apply_correction`: Apply Correction (:func:`~.apply_correction.apply_correction`);
- :mod:`.stack`: Coregister Stack (:func:`~.stack.coregister_stack`);
- :mod:`.batch`: many pairs at once; :mod:`.diagnostics`: the scratch folder and what is kept in it.
"""
