"""`ponder export-hf DIR`: write the embedded SmolLM2 GGUF as a Hugging Face model folder.

vLLM (0.33 has no GGUF loader) serves Hugging Face folders; this gives the vLLM engine the same
weights the llama.cpp engine runs, with no model hub. transformers dequantizes the GGUF
(`gguf_file=`, needs the `gguf` package); the model is rebuilt from its config without the
GGUF quantization entry, so the folder is an ordinary bfloat16 checkpoint (about 270 MB).
Needs `pip install 'ponder[export]'` (transformers, torch, gguf, accelerate); the
`[vllm-cpu]` extra includes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger("ponder.export")

MARKER = "ponder-export.json"
"""Written into the folder last: its presence means the export finished."""


def export_hf(out_dir: str | Path, gguf: str | Path | None = None, dtype: str = "bfloat16") -> Path:
    """Write `gguf` (default: the embedded SmolLM2) to `out_dir` as a transformers folder.

    Returns the folder. A folder that already holds a finished export of the same file is
    left as it is.
    """
    from .engines.llamacpp import embedded_model_path

    src = Path(gguf) if gguf else embedded_model_path()
    out = Path(out_dir)
    marker = out / MARKER
    wanted = {"gguf": src.name, "size": src.stat().st_size, "dtype": dtype}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        log.info("%s already holds %s", out, src.name)
        return out
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise SystemExit(
            f"export-hf needs transformers and torch ({exc.name} is missing): "
            "pip install 'ponder[export]'"
        ) from None

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    loaded = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch_dtype
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch_dtype)
    model.load_state_dict(loaded.state_dict())
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps(wanted))
    log.info("wrote %s from %s", out, src)
    return out
