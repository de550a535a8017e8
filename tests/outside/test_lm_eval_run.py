"""Issue 25: lm-evaluation-harness 0.4.13 itself (its own environment, .ci/lm-eval-env) against
a live server: a local multiple-choice task, chat-formatted (the answer is followed by the
end of the turn) and plain, with `--batch_size 8` (batched prompts) and with one prompt per
request beside `num_concurrent`. Each choice's score equals llama-cpp-python's own forward
pass on the same tokens; both ways give the same scores."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..conftest import Server

VENV = os.environ.get("PONDER_LM_EVAL_VENV")
pytestmark = pytest.mark.skipif(
    not VENV,
    reason="needs lm-evaluation-harness's environment: PONDER_LM_EVAL_VENV=$(bash .ci/lm-eval-env)",
)

ITEMS = [
    ("What is the capital of France?", ["Paris.", "London.", "Rome.", "Berlin."], 0),
    ("What is 2 + 2?", ["3.", "4.", "5.", "22."], 1),
    ("What color is the sky on a clear day?", ["Green.", "Blue.", "Red.", "Black."], 1),
    ("How many legs does a cat have?", ["Two.", "Six.", "Four.", "Eight."], 2),
    ("Which animal barks?", ["Dog.", "Cat.", "Fish.", "Bird."], 0),
    ("What is the opposite of hot?", ["Warm.", "Cold.", "Big.", "Fast."], 1),
    ("What do bees make?", ["Milk.", "Honey.", "Bread.", "Silk."], 1),
    ("Which planet do we live on?", ["Mars.", "Venus.", "Earth.", "Jupiter."], 2),
    ("What is frozen water called?", ["Steam.", "Ice.", "Sand.", "Glass."], 1),
    ("How many days are in a week?", ["Five.", "Six.", "Seven.", "Ten."], 2),
]
TEMPLATES = {
    "chat": "<|im_start|>user\\n{{question}} One word.<|im_end|>\\n<|im_start|>assistant\\n",
    "plain": "Question: {{question}}\\nAnswer:",
}


def write_task(root: Path, kind: str) -> str:
    data = root / f"{kind}.jsonl"
    data.write_text(
        "".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in ITEMS)
    )
    delimiter = '""' if kind == "chat" else '" "'
    (root / f"ponder_{kind}.yaml").write_text(
        f"task: ponder_{kind}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        f'doc_to_text: "{TEMPLATES[kind]}"\n'
        f"target_delimiter: {delimiter}\n"
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return f"ponder_{kind}"


def run_lm_eval(
    server: Server, root: Path, task: str, out: Path, concurrent: int, batch: int
) -> list[list[float]]:
    """lm_eval's CLI; each doc's per-choice loglikelihoods (from its logged samples)."""
    args = f"num_concurrent={concurrent}"
    cmd = [
        str(Path(VENV or "") / "bin" / "lm_eval"),
        "--model",
        "local-completions",
        "--model_args",
        f"model=smollm2,base_url={server.base_url}/v1/completions,tokenizer_backend=remote,{args}",
        "--tasks",
        task,
        "--include_path",
        str(root),
        "--log_samples",
        "--output_path",
        str(out),
        "--batch_size",
        str(batch),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert run.returncode == 0, run.stderr[-3000:]
    (samples,) = out.rglob(f"samples_{task}_*.jsonl")
    docs = [json.loads(line) for line in samples.read_text().splitlines()]
    docs.sort(key=lambda d: d["doc_id"])
    return [[float(r[0]) for r in d["filtered_resps"]] for d in docs]


def reference(server: Server, ref: Any, context: str, choice: str) -> float:
    """llama-cpp-python's own forward pass on the ids lm-eval scores (its _encode_pair:
    trailing whitespace of the context moves to the continuation; both encoded through the
    server's /tokenize, as tokenizer_backend=remote does)."""
    import httpx
    from scipy.special import log_softmax

    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, choice = context[:-spaces], context[-spaces:] + choice

    def enc(text: str) -> list[int]:
        body = {"prompt": text, "add_special_tokens": False}
        return list(httpx.post(f"{server.base_url}/tokenize", json=body).json()["tokens"])

    whole, ctx = enc(context + choice), enc(context)
    ref.reset()
    ref.eval(whole)
    z = log_softmax(np.asarray(ref.scores[: len(whole)], dtype=np.float64), axis=1)
    return float(sum(z[i - 1, whole[i]] for i in range(len(ctx), len(whole))))


@pytest.fixture(scope="module")
def llama() -> Iterator[Any]:
    """llama-cpp-python's high-level model with every row's logits kept, with the attention
    kernel and the 32-token calls of Ponder's prefill (tests/engine/test_llamacpp.py)."""
    from llama_cpp import Llama

    from ponder.engines.batcher import PREFILL_CHUNK
    from ponder.engines.llamacpp import embedded_model_path

    ref = Llama(
        model_path=str(embedded_model_path()),
        n_ctx=512,
        n_batch=PREFILL_CHUNK,
        n_ubatch=PREFILL_CHUNK,
        flash_attn=True,
        logits_all=True,
        verbose=False,
    )
    yield ref
    ref.close()


@pytest.mark.parametrize("kind", ["chat", "plain"])
def test_lm_eval_scores_equal_the_models_own_forward_pass(
    server: Server, llama: Any, tmp_path: Path, kind: str
) -> None:
    task = write_task(tmp_path, kind)
    batched = run_lm_eval(server, tmp_path, task, tmp_path / "batched", concurrent=1, batch=8)
    concurrent = run_lm_eval(server, tmp_path, task, tmp_path / "one", concurrent=4, batch=1)
    # The same request of each prompt either way (one prompt's prefill does not depend on
    # what runs beside it: engines.md "Reproducibility")
    np.testing.assert_allclose(batched, concurrent, atol=1e-4)
    context = TEMPLATES[kind].replace("\\n", "\n")
    space = " " if kind == "plain" else ""  # the task's target_delimiter
    want = [
        [reference(server, llama, context.replace("{{question}}", q), space + c) for c in choices]
        for q, choices, _ in ITEMS
    ]
    got = np.array(batched)
    # atol: the scores are sums of a few tokens' logprobs, each equal to llama.cpp's own pass
    # to ~2e-6 on this machine (tests/engine/test_llamacpp.py); 1e-3 allows AVX2/AVX-512 kernels
    np.testing.assert_allclose(got, np.array(want), atol=1e-3)
    assert (got.argmax(axis=1) == np.array(want).argmax(axis=1)).all()
