"""data stage: NIfTI I/O, validation, preprocessing, manifests, cache, batch sampler.

- :mod:`disyre.data.nifti`: ``load_scan``/``load_mask`` (validated, axial-first canonical RAS),
  ``save_like`` (exactly the input's grid and affine), ``InputError``;
- :mod:`disyre.data.intensity`: percentile scaling, foreground crop, ``uncrop``;
- :mod:`disyre.data.manifest`: manifest CSV and builders for folder/BraTS/ATLAS/CamCAN/IXI;
- :mod:`disyre.data.cache`: preprocessed, memory-mapped volumes reused across runs;
- :mod:`disyre.data.sampler`: random in-brain training patches ``(B, 1, P, P)``.

See docs/data.md.
"""
