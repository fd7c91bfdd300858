"""lminf_diag: why language models break down past their training length, and what LM-Infinite does."""

__version__ = "0.1.0"
