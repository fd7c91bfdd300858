"""Loading models and describing them: embedded names, local folders, ``.gguf`` files, hub ids.

Example:
    >>> from lminf_diag.models import family_of, supported_families
    >>> family_of("llama").route
    'interface'
"""

from lminf_diag.models.embedded import EMBEDDED, EmbeddedModel, cache_dir, embedded_path, register_embedded
from lminf_diag.models.families import (
    FamilySpec,
    alias_family,
    family_of,
    find_family,
    register_family,
    supported_families,
    unregister_family,
)
from lminf_diag.models.info import ModelInfo, model_info
from lminf_diag.models.loader import load_model, model_name

__all__ = [
    "EMBEDDED",
    "EmbeddedModel",
    "FamilySpec",
    "ModelInfo",
    "cache_dir",
    "embedded_path",
    "family_of",
    "find_family",
    "load_model",
    "model_info",
    "model_name",
    "register_embedded",
    "register_family",
    "alias_family",
    "unregister_family",
    "supported_families",
]
