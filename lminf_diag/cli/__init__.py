"""The ``diag`` command line: one module per verb, each with ``add_parser(subparsers)`` and ``run(args)``.

Verbs: models, generate, entropy, logits, pca, report (and ppl, passkey when installed).
Shared options live in `options`, the capture/analysis flow in `pipeline`, progress lines in
`progress`; `main.main` parses, dispatches and turns `DiagError` into ``error: ...`` (exit 2).

Example:
    >>> from lminf_diag.cli.main import main
    >>> main(["models"])  # doctest: +SKIP
    0
"""
