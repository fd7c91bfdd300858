"""Small helpers the whole package shares, one concept per module.

`atomic` (files and folders written under a temporary name, then renamed into place),
`versions` (the library versions and git commit a result records), `jsonsafe` (numpy values,
NaN and paths made JSON-ready), `html` (escaped text and small tables). Nothing here imports
another lminf_diag module, so every layer may use them.
"""
