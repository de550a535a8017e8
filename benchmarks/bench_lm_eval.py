"""lm-evaluation-harness against a running server on a local multiple-choice task: each
choice's score against llama-cpp-python's own forward pass on the same tokens (max abs
difference, argmax agreement) and the wall time of `--batch_size 8` against one prompt per
request with `num_concurrent`. Figures for docs (issue 25); not a test.

    PONDER_LM_EVAL_VENV=$(bash .ci/lm-eval-env) ponder serve --port 8123 &
    python benchmarks/bench_lm_eval.py --url http://127.0.0.1:8123 --kind chat
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from scipy.special import log_softmax

ITEMS = [
    ("What is the capital of France?", ["Paris.", "London.", "Rome.", "Berlin."]),
    ("What is 2 + 2?", ["3.", "4.", "5.", "22."]),
    ("What color is the sky on a clear day?", ["Green.", "Blue.", "Red.", "Black."]),
    ("How many legs does a cat have?", ["Two.", "Six.", "Four.", "Eight."]),
    ("Which animal barks?", ["Dog.", "Cat.", "Fish.", "Bird."]),
    ("What is the opposite of hot?", ["Warm.", "Cold.", "Big.", "Fast."]),
    ("What do bees make?", ["Milk.", "Honey.", "Bread.", "Silk."]),
    ("Which planet do we live on?", ["Mars.", "Venus.", "Earth.", "Jupiter."]),
    ("What is frozen water called?", ["Steam.", "Ice.", "Sand.", "Glass."]),
    ("How many days are in a week?", ["Five.", "Six.", "Seven.", "Ten."]),
]
TEMPLATES = {
    "chat": "<|im_start|>user\\n{{question}} One word.<|im_end|>\\n<|im_start|>assistant\\n",
    "plain": "Question: {{question}}\\nAnswer:",
}


def task(root: Path, kind: str) -> str:
    data = root / "mc.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c}) + "\n" for q, c in ITEMS))
    delim = '""' if kind == "chat" else '" "'
    (root / "t.yaml").write_text(
        f"task: bench_{kind}\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        f'output_type: multiple_choice\ndoc_to_text: "{TEMPLATES[kind]}"\n'
        f'target_delimiter: {delim}\ndoc_to_choice: "{{{{choices}}}}"\ndoc_to_target: 0\n'
        "metric_list:\n  - metric: acc\n"
    )
    return f"bench_{kind}"


def lm_eval(
    url: str, root: Path, name: str, concurrent: int, batch: int, out: Path
) -> tuple[list, float]:
    cmd = [
        str(Path(os.environ["PONDER_LM_EVAL_VENV"]) / "bin" / "lm_eval"),
        "--model", "local-completions",
        "--model_args",
        f"model=smollm2,base_url={url}/v1/completions,tokenizer_backend=remote,"
        f"num_concurrent={concurrent}",
        "--tasks", name, "--include_path", str(root), "--log_samples",
        "--output_path", str(out), "--batch_size", str(batch),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=root)
    wall = time.perf_counter() - t0
    (samples,) = out.rglob("samples_*.jsonl")
    docs = sorted(
        (json.loads(x) for x in samples.read_text().splitlines()), key=lambda d: d["doc_id"]
    )
    return [[float(r[0]) for r in d["filtered_resps"]] for d in docs], wall


def reference(url: str, kind: str) -> np.ndarray:
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

    def enc(text: str) -> list[int]:
        body = {"prompt": text, "add_special_tokens": False}
        return list(httpx.post(f"{url}/tokenize", json=body).json()["tokens"])

    rows = []
    template = TEMPLATES[kind].replace("\\n", "\n")
    for q, choices in ITEMS:
        row = []
        for c in choices:
            context, cont = (
                template.replace("{{question}}", q),
                (" " if kind == "plain" else "") + c,
            )
            n = len(context) - len(context.rstrip())
            if n:
                context, cont = context[:-n], context[-n:] + cont
            whole, ctx = enc(context + cont), enc(context)
            ref.reset()
            ref.eval(whole)
            z = log_softmax(np.asarray(ref.scores[: len(whole)], dtype=np.float64), axis=1)
            row.append(sum(z[i - 1, whole[i]] for i in range(len(ctx), len(whole))))
        rows.append(row)
    ref.close()
    return np.array(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--kind", choices=["chat", "plain"], default="chat")
    ap.add_argument("--no-batch", action="store_true", help="the server refuses batches")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each; the median wall")
    args = ap.parse_args()
    want = reference(args.url, args.kind)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        name = task(root, args.kind)
        runs = [("num_concurrent=4, batch 1", 4, 1)]
        if not args.no_batch:
            runs.insert(0, ("num_concurrent=1, batch 8", 1, 8))
        for label, concurrent, batch in runs:
            walls = []
            for k in range(args.repeats):
                out = root / f"out-{concurrent}-{batch}-{k}"
                got, wall = lm_eval(args.url, root, name, concurrent, batch, out)
                walls.append(wall)
            wall = float(np.median(walls))
            g = np.array(got)
            agree = int((g.argmax(axis=1) == want.argmax(axis=1)).sum())
            diff = float(np.abs(g - want).max())
            print(f"{args.kind} {label}: max |diff| {diff:.2e} nats, argmax {agree}/{len(g)}, "
                  f"wall {wall:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
