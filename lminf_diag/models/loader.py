"""``load_model``: one entry point for embedded names, local folders, ``.gguf`` files and anything
``from_pretrained`` accepts (hub ids, with ``revision`` and ``token``).

Hub access is left to ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_ENDPOINT`` mirrors,
proxies); a failed download becomes one `ModelNotFoundError` line naming the id.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import warnings
import weakref
from pathlib import Path
from typing import Any

from lminf_diag.errors import InvalidArgumentError, ModelNotFoundError
from lminf_diag.models.embedded import DEFAULT_MODEL, EMBEDDED, embedded_names, embedded_path
from lminf_diag.models.families import alias_family, family_of, find_family

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
_DTYPES.update({"float16": "float16", "fp16": "float16", "half": "float16"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")  # "gpt2" or "org/name"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_NAMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
# transformers' reminders that a text or a generation is longer than the model's maximum length:
# the toolkit runs past the training length on purpose
_LENGTH_REMINDERS = {
    "transformers.tokenization_utils_base": "Token indices sequence length is longer than the specified maximum",
    "transformers.generation.stopping_criteria": "This is a friendly reminder - the current text generation call",
}


class _DropLengthReminder(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def silence_length_warnings() -> None:
    """Drop transformers' "sequence length is longer than the maximum" reminders (idempotent).

    Only those two messages are filtered, on their own loggers; everything else still shows.

    Example:
        >>> silence_length_warnings()
        >>> log = logging.getLogger("transformers.tokenization_utils_base")
        >>> log.filter(logging.makeLogRecord({"msg": "Token indices sequence length is longer than the "
        ...     "specified maximum sequence length for this model (9 > 8)."}))
        False
    """
    for name, prefix in _LENGTH_REMINDERS.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropLengthReminder) for f in log.filters):
            log.addFilter(_DropLengthReminder(prefix))


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
        return "hub", text, None  # anything else from_pretrained accepts; huggingface_hub decides
    raise ModelNotFoundError(
        f"The path {path} does not exist (expected a model folder or a .gguf file), and {text!r} is not a "
        f"hub id (org/name). Embedded names: {', '.join(embedded_names())} (default {DEFAULT_MODEL})."
    )


def _offline_now() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_error(location: str, err: Exception) -> ModelNotFoundError:
    """One line for a hub id that could not be read (not found, gated, offline, no connection)."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelNotFoundError(
        f"Cannot load {location!r} from the Hugging Face hub: {first} Check the id (and revision= / token= "
        "for a private or gated model; CLI --revision, --token). When offline (HF_HUB_OFFLINE=1) only models "
        "already in the local Hugging Face cache load; otherwise pass a local model folder (save_pretrained), "
        f"a .gguf file, or an embedded name ({', '.join(embedded_names())})."
    )


def _assume(config: Any, assume_family: str | None) -> None:
    """Treat an unlisted model_type as the listed family `assume_family` (with a warning)."""
    if not assume_family:
        return
    model_type = getattr(config, "model_type", None)
    if model_type and find_family(model_type) is None:
        alias_family(str(model_type), assume_family)
    elif model_type:
        warnings.warn(
            f"assume_family={assume_family!r} ignored: model type {model_type!r} is already listed.", stacklevel=3
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
    revision: str | None = None,
    token: str | bool | None = None,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    attn_implementation: str | None = "sdpa",
    check_family: bool = True,
    assume_family: str | None = None,
) -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer, unchanged, in eval mode.

    ``name_or_path`` is an embedded name (default ``"smollm2-135m"``), a local model folder,
    a ``.gguf`` file, or anything ``from_pretrained`` accepts (``"org/name"``, ``"gpt2"``), with
    ``revision`` and ``token`` passed on; the hub is reached through ``huggingface_hub`` (cache,
    ``HF_HUB_OFFLINE``, ``HF_ENDPOINT``), and a failure is one clear `ModelNotFoundError`.
    ``dtype``: None (float32 on CPU; the checkpoint's dtype with ``device="cuda"`` or ``device_map``),
    a torch dtype, or "fp32"/"bf16"/"fp16" (long names too). ``device`` moves the model;
    ``device_map`` ("auto", a dict, ...) is passed to ``from_pretrained`` (not both).
    Architectures with absolute positions raise ``UnsupportedModelError`` unless
    ``check_family=False``; an unlisted relative-position architecture loads with
    ``assume_family="llama"`` (any listed family; unchecked, with a warning) or after
    :func:`~lminf_diag.models.families.register_family`. If the architecture has no SDPA support,
    eager attention is used.

    Example:
        >>> model, tokenizer = load_model()  # doctest: +SKIP
        >>> model_name(model), model.config.num_hidden_layers  # doctest: +SKIP
        ('smollm2-135m', 30)
        >>> load_model("Qwen/Qwen2.5-0.5B", revision="main", device_map="auto")  # doctest: +SKIP
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
    silence_length_warnings()

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
    else:  # hub
        common["use_safetensors"] = not allow_pickle
        common.update({k: v for k, v in (("revision", revision), ("token", token)) if v is not None})
        if _offline_now():
            common["local_files_only"] = True

    light_kwargs = {k: v for k, v in common.items() if k != "use_safetensors"}
    if kind != "gguf":  # check before reading weights; a GGUF header is slow to parse
        try:
            config = AutoConfig.from_pretrained(location, **light_kwargs)
        except OSError as err:
            if kind == "hub":
                raise _hub_error(location, err) from err
            raise
        _assume(config, assume_family)
        if check_family:
            family_of(config)

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
    except OSError as err:
        if kind == "hub":
            raise _hub_error(location, err) from err
        raise
    if kind == "gguf":
        _assume(model.config, assume_family)
        if check_family:
            family_of(model)
    tokenizer = AutoTokenizer.from_pretrained(location, **light_kwargs)

    if device is not None:
        model = model.to(device)
    model.eval()
    _NAMES[model] = os.fspath(name_or_path)
    return model, tokenizer
