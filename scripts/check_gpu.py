"""First-run check of the vLLM engine on a machine with an NVIDIA GPU (never run by CI).

    pip install -e ".[vllm,test]"
    python scripts/check_gpu.py [--model Qwen/Qwen2.5-0.5B-Instruct] [--port 8011]
    # offline: a local folder (e.g. `ponder export-hf ~/smollm2-hf`), or random weights
    python scripts/check_gpu.py --model ~/smollm2-hf [--load-format dummy]

Starts `ponder serve` with PONDER_ENGINE=vllm, then checks through the openai SDK: readiness,
every strategy answering with metadata, exact (processor) stats, reproducibility with a seed,
CNTP, streaming, and vLLM's own metrics on /metrics. Prints one line per check and exits 1 on
the first failure. Expect several minutes for the first model download; with a local folder
nothing is downloaded (HF_HUB_OFFLINE is set), and `--load-format dummy` needs only the
folder's config and tokenizer. Reproducibility is checked tolerantly: vLLM is not
batch-invariant by default, so the same seeds may differ in a few samples when the batch
differs; the check asks that most samples agree, and reports how many.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import httpx
import openai


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct", help="hub id or folder")
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--load-format", default="auto", help="vLLM load format; dummy = random")
    ap.add_argument("--max-model-len", type=int, default=4096)
    args = ap.parse_args()
    env = {
        **os.environ,
        "PONDER_ENGINE": "vllm",
        "PONDER_MODEL": os.path.expanduser(args.model),
        "PONDER_MODEL_NAME": "gpu-check",
        "PONDER_VLLM_GPU_MEMORY_UTILIZATION": "0.6",
        "PONDER_VLLM_LOAD_FORMAT": args.load_format,
        "PONDER_VLLM_MAX_MODEL_LEN": str(args.max_model_len),
    }
    if os.path.isdir(env["PONDER_MODEL"]):
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ponder.cli", "serve", "--port", str(args.port)], env=env
    )
    base = f"http://127.0.0.1:{args.port}"

    def check(name: str, ok: bool, detail: object = "") -> None:
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)
        if not ok:
            proc.terminate()
            sys.exit(1)

    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                check("server started", False, f"exit code {proc.returncode}")
            time.sleep(5)
        check("ready", httpx.get(f"{base}/ready", timeout=5).status_code == 200)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        q = [{"role": "user", "content": "What is 17 * 3? End with 'The answer is N'."}]
        runs = {}
        for strategy in ("majority_vote", "self_certainty", "rpc"):
            r = client.chat.completions.create(
                model="gpu-check",
                messages=q,
                max_tokens=128,
                seed=1,
                extra_body={
                    "ponder": {"strategy": strategy, "samples": 8, "include_candidates": True}
                },
            )
            p = r.model_extra["ponder"]
            runs[strategy] = p
            check(f"{strategy} answers", p["generated"] == 8, (p["answer"], p["confidence"]))
            check(f"{strategy} exact stats", p["exact"] is True)
        texts = [[c["text"] for c in p["candidates"]] for p in runs.values()]
        same = sum(a == b == c for a, b, c in zip(*texts, strict=True))
        check("same seed -> (mostly) same samples across strategies", same >= 6, f"{same}/8")
        sc = [c["self_certainty"] for c in runs["self_certainty"]["candidates"]]
        check("self-certainty is positive", min(sc) > 0, sc[:3])
        r = client.chat.completions.create(
            model="gpu-check+cntp", messages=q, max_tokens=96, seed=2
        )
        notes = r.model_extra["ponder"]["notes"]
        check("cntp decodes", notes["branched_steps"] >= 0 and r.usage.completion_tokens > 0, notes)
        chunks = list(
            client.chat.completions.create(
                model="gpu-check", messages=q, max_tokens=32, stream=True
            )
        )
        check("token streaming", len(chunks) > 3)
        text = httpx.get(f"{base}/metrics", timeout=10).text
        check("ponder metrics", "ponder_requests_total" in text)
        check("vLLM metrics on the same endpoint", "vllm:" in text)
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=120)


if __name__ == "__main__":
    sys.exit(main())
