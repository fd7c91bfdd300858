"""``load_model``: one entry point for embedded names, local folders, ``.gguf`` files and hub ids."""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import threading
import weakref
from pathlib import Path
from typing import Any

from lminf_diag.errors import InvalidArgumentError, ModelNotFoundError
from lminf_diag.models.embedded import DEFAULT_MODEL, EMBEDDED, embedded_names, embedded_path
from lminf_diag.models.families import family_of

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DTYPES.update({"float16": "float16", "fp16": "float16", "half": "float16"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_NAMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_HUB_HOST = ("huggingface.co", 443)


def model_name(model: Any) -> str:
    """The name a model was loaded under (embedded name, path or hub id), for reports.

    Falls back to ``config._name_or_path`` and then to ``config.model_type`` for models that
    did not come through :func:`load_model`.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model_name(LlamaForCausalLM(LlamaConfig(num_hidden_layers=1, hidden_size=32,
        ...     num_attention_heads=2, intermediate_size=64, vocab_size=64)))
        'llama'
    """
    name = _NAMES.get(model)
    if name:
        return name
    config = getattr(model, "config", None)
    return str(
        getattr(config, "_name_or_path", "") or getattr(config, "model_type", "") or type(model).__name__
    )


def resolve_dtype(dtype: Any) -> Any:
    """Turn None / a torch dtype / a string ("fp32", "bf16", "fp16", ...) into a torch dtype or None.

    Example:
        >>> resolve_dtype("bf16")
        torch.bfloat16
    """
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return getattr(torch, _DTYPES[dtype.lower()])
    accepted = ", ".join(sorted(_DTYPES))
    raise InvalidArgumentError(f"dtype {dtype!r} is not accepted; use a torch dtype or one of: {accepted}.")


def _check_device(device: str | None) -> str | None:
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InvalidArgumentError(
            f"device {device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'."
        ) from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"device {device!r} asked for, but CUDA is not available here; use 'cpu'."
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise InvalidArgumentError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible."
            )
    return str(parsed)


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if a TCP connection to huggingface.co:443 opens within ``timeout`` seconds (DNS included).

    Example:
        >>> isinstance(hub_reachable(0.5), bool)
        True
    """
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection(_HUB_HOST, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=attempt, daemon=True)  # getaddrinfo ignores socket timeouts
    worker.start()
    worker.join(timeout + 0.5)
    return bool(result and result[0])


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _refuse_pickles(folder: Path, allow_pickle: bool) -> None:
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if allow_pickle or any(
        f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in files
    ):
        return
    pickles = sorted(f for f in files if f.endswith(_PICKLE_SUFFIXES) or f.endswith(".bin.index.json"))
    if pickles:
        raise ModelNotFoundError(
            f"The folder {folder} has weights only in pickle format ({', '.join(pickles)}); pickles can run "
            "arbitrary code when loaded, so they are refused. Convert them to safetensors, or pass "
            "allow_pickle=True (CLI --allow-pickle) if you trust the source."
        )
    raise ModelNotFoundError(f"The folder {folder} has no model weights (*.safetensors).")


def _resolve_source(name_or_path: str | os.PathLike[str]) -> tuple[str, str, str | None]:
    """Classify the argument: returns (kind, location, gguf_file) with kind embedded/folder/gguf/hub."""
    text = os.fspath(name_or_path)
    if text in EMBEDDED:
        return "embedded", text, None
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            return "folder", str(path), None
        if path.suffix.lower() == ".gguf":
            return "gguf", str(path.parent), path.name
        raise ModelNotFoundError(
            f"{path} is a file but not a .gguf file; pass a model folder, a .gguf file, an embedded name "
            f"({', '.join(embedded_names())}) or a hub id org/name."
        )
    looks_like_path = text.startswith((".", "/", "~", "\\")) or text.lower().endswith(".gguf")
    if not looks_like_path and _HUB_ID.match(text):
        return "hub", text, None
    if looks_like_path or "/" in text or os.sep in text:
        raise ModelNotFoundError(
            f"The path {path} does not exist (expected a model folder or a .gguf file). Embedded names: "
            f"{', '.join(embedded_names())}."
        )
    raise ModelNotFoundError(
        f"Unknown model {text!r}: not an embedded name, not an existing path and not a hub id of the form "
        f"org/name. Embedded names: {', '.join(embedded_names())} (default {DEFAULT_MODEL})."
    )


def _require_gguf_support() -> None:
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelNotFoundError(
            f"Loading a .gguf file needs the packages {' and '.join(missing)}: pip install {' '.join(missing)}"
        )


def load_model(
    name_or_path: str | os.PathLike[str] = DEFAULT_MODEL,
    *,
    dtype: Any = None,
    device: str | None = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    attn_implementation: str | None = "sdpa",
    check_family: bool = True,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, unchanged, in eval mode.

    ``name_or_path`` is an embedded name (default ``"smollm2-135m"``), a local model folder,
    a ``.gguf`` file, or a hub id ``org/name`` (local cache first; a clear error, never a hang,
    when the hub cannot be reached). ``dtype``: None (float32 on CPU; the checkpoint's dtype with
    ``device="cuda"`` or ``device_map``), a torch dtype, or "fp32"/"bf16"/"fp16" (long names too).
    ``device`` moves the model; ``device_map`` is passed to ``from_pretrained`` (not both).
    Architectures with absolute positions raise ``UnsupportedModelError`` unless
    ``check_family=False``. If the architecture has no SDPA support, eager attention is used.

    Example:
        >>> model, tokenizer = load_model()  # doctest: +SKIP
        >>> model_name(model), model.config.num_hidden_layers  # doctest: +SKIP
        ('smollm2-135m', 30)
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if device is not None and device_map is not None:
        raise InvalidArgumentError(
            "Pass either device (moves the whole model) or device_map (accelerate), not both."
        )
    device = _check_device(device)
    torch_dtype = resolve_dtype(dtype)
    if torch_dtype is None:
        on_cpu = device_map is None and (device is None or device.startswith("cpu"))
        torch_dtype = torch.float32 if on_cpu else "auto"

    kind, location, gguf_file = _resolve_source(name_or_path)
    common: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if kind == "embedded":
        location = str(embedded_path(location))
        kind = "folder"
    if kind == "folder":
        _refuse_pickles(Path(location), allow_pickle)
        common["use_safetensors"] = not allow_pickle
    elif kind == "gguf":
        _require_gguf_support()
        common["gguf_file"] = gguf_file
    elif kind == "hub":
        common["use_safetensors"] = not allow_pickle
        if _hub_cached(location):
            common["local_files_only"] = True
        elif _hub_offline() or not hub_reachable(3.0):
            why = "HF_HUB_OFFLINE is set" if _hub_offline() else "huggingface.co cannot be reached"
            raise ModelNotFoundError(
                f"Cannot load {location!r}: it is not in the local Hugging Face cache and the hub is offline "
                f"({why}; no local path {location!r} exists either). Pass a local model folder or a .gguf "
                f"file path instead, or an embedded name ({', '.join(embedded_names())})."
            )

    light_kwargs = {k: v for k, v in common.items() if k != "use_safetensors"}
    if check_family and kind != "gguf":  # check before reading weights; a GGUF header is slow to parse
        family_of(AutoConfig.from_pretrained(location, **light_kwargs))

    model_kwargs = dict(common, dtype=torch_dtype)
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location, attn_implementation=attn_implementation, **model_kwargs
        )
    except ValueError as err:
        if attn_implementation != "sdpa" or "does not support" not in str(err):
            raise
        model = AutoModelForCausalLM.from_pretrained(location, attn_implementation="eager", **model_kwargs)
    if check_family and kind == "gguf":
        family_of(model)
    tokenizer = AutoTokenizer.from_pretrained(location, **light_kwargs)

    if device is not None:
        model = model.to(device)
    model.eval()
    _NAMES[model] = os.fspath(name_or_path)
    return model, tokenizer
