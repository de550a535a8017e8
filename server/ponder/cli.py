"""`ponder serve | ask | eval`: the command-line entry point."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from .config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app
    from .strategies import STRATEGIES

    overrides = {
        "host": args.host,
        "port": args.port,
        "model": args.model,
        "model_name": args.model_name,
        "default_strategy": args.strategy,
        "log_level": args.log_level,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if settings.default_strategy not in STRATEGIES:
        print(
            f"error: unknown strategy {settings.default_strategy!r}; "
            f"available: {', '.join(STRATEGIES)}",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = create_app(settings)
    except ValueError as exc:  # an unreadable PONDER_CALIBRATION file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # A float, as set (2.9 s is 2.9 s); 0 means no grace, not "wait forever".
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # type: ignore[arg-type]
        # X-Forwarded-For is believed only from the proxies named in PONDER_TRUSTED_PROXIES
        # (uvicorn's default trusts it from any loopback peer).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or "",
    )
    _draining_server(app, settings, config).run()
    return 0


def _draining_server(app: Any, settings: Settings, config: Any) -> Any:
    """uvicorn's server, with SIGTERM/SIGINT draining: stop admitting (/ready -> 503), let
    in-flight requests finish within the grace period, then exit 0."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            gate = app.state.gate
            if not gate.draining:
                # Half a second before uvicorn's grace ends, Ponder ends what is still running
                # with a 503 envelope (streams: an error event and [DONE]).
                loop = asyncio.get_event_loop()
                cut = max(settings.shutdown_grace_s - 0.5, 0.0)
                loop.call_soon_threadsafe(loop.call_later, cut, gate.closing.set)
            gate.draining = True
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                # uvicorn re-raises captured signals after shutting down, which would end the
                # process with -SIGTERM; a drained shutdown is a clean exit (status 0).
                self._captured_signals.remove(sig)

    return Server(config)


class AskError(Exception):
    """A request `ponder ask` cannot run, with the message a server would answer."""


def _ask_in_process(args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    """Run one request on the embedded engine without HTTP: the request is checked before
    the model loads (a typo costs no load), then planned, executed and rendered; every
    failure is an AskError carrying the message the server would send."""
    from pydantic import ValidationError

    from . import runner
    from .api.errors import to_api_error, validation_error
    from .api.plan import build_plan, check_request
    from .api.render import response_body
    from .api.schemas import ChatCompletionRequest
    from .calibration import Calibration
    from .engines import create_engine

    settings = Settings(model=args.model) if args.model else Settings()
    engine = create_engine(settings)
    try:
        calibration = Calibration.load(settings.calibration) if settings.calibration else None
        req = ChatCompletionRequest.model_validate({**body, "model": engine.model_name})
        check_request(req, settings, engine.model_name, engine.continues_chat)
    except ValidationError as exc:
        raise AskError(validation_error(exc.errors()).message) from None
    except Exception as exc:
        raise AskError(to_api_error(exc).public) from None

    async def run() -> dict[str, Any]:
        await engine.start()
        try:
            plan = build_plan(req, settings, engine)
            out = await runner.run(plan.job, engine, calibration=calibration)
            return response_body([plan], [out])
        finally:
            await engine.close()

    try:
        return asyncio.run(run())
    except Exception as exc:
        raise AskError(to_api_error(exc).public) from None


def _ask(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ponder_client import Ponder, PonderError, Result, ponder_options

    options = ponder_options(strategy=args.strategy, samples=args.samples, answer=args.answer)
    params = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    params = {k: v for k, v in params.items() if v is not None}
    console = Console()
    try:
        if args.url:
            with Ponder(args.url, timeout=args.timeout) as client:
                result = client.chat(
                    args.question,
                    model=args.model_name or None,
                    extra_body={"ponder": options},
                    **params,
                )
        else:
            body = {
                "messages": [{"role": "user", "content": args.question}],
                "ponder": options,
                **params,
            }
            with console.status("generating on the embedded engine..."):
                result = Result.from_response(_ask_in_process(args, body))
    except (PonderError, AskError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 1
    if args.json:
        print(json.dumps(result.raw, indent=2))
        return 0
    console.print(escape(result.text.strip()), highlight=False)
    console.print()
    conf = "-" if result.confidence is None else f"{result.confidence:.3f}"
    console.print(
        f"[bold]answer:[/bold] {escape(str(result.answer))}   [bold]confidence:[/bold] {conf}   "
        f"[bold]strategy:[/bold] {result.strategy}"
    )
    if result.tally:
        table = Table("answer", "votes", "score", "share")
        for t in result.tally:
            table.add_row(escape(t.answer), str(t.votes), f"{t.score:.3f}", f"{t.share:.3f}")
        console.print(table)
    u = result.usage
    console.print(f"tokens: prompt {u.prompt_tokens}, completion {u.completion_tokens}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .eval import run_eval

    return run_eval(args)


def _export_hf(args: argparse.Namespace) -> int:
    from .export_hf import export_hf

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    out = export_hf(args.dir, gguf=args.gguf, dtype=args.dtype)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ponder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the OpenAI-compatible server")
    serve.add_argument("--host", help="bind address (PONDER_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (PONDER_PORT, default 8000)")
    serve.add_argument("--model", help="GGUF model path (PONDER_MODEL; default: embedded SmolLM2)")
    serve.add_argument(
        "--model-name", help="served model name (PONDER_MODEL_NAME, default smollm2)"
    )
    serve.add_argument(
        "--strategy", help="default strategy (PONDER_DEFAULT_STRATEGY, default none)"
    )
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)
    ask = sub.add_parser("ask", help="ask one question; print the answer, confidence and tally")
    ask.add_argument("question")
    ask.add_argument("--strategy", default="majority_vote", help="default majority_vote")
    ask.add_argument("--samples", type=int, default=8, help="default 8")
    ask.add_argument("--answer", default="auto", help="answer format (auto, number, ...)")
    ask.add_argument("--url", help="a running server (else: in process, embedded engine)")
    ask.add_argument("--model", help="in process: GGUF model path (default: embedded SmolLM2)")
    ask.add_argument("--model-name", help="with --url: model to ask (default: the first one)")
    ask.add_argument("--max-tokens", type=int, default=256)
    ask.add_argument("--temperature", type=float)
    ask.add_argument("--seed", type=int)
    ask.add_argument("--timeout", type=float, default=600.0)
    ask.add_argument("--json", action="store_true", help="print the raw response JSON")
    ask.set_defaults(func=_ask)
    evaluate = sub.add_parser("eval", help="accuracy, cost and calibration of the strategies")
    from .eval.cli import add_arguments

    add_arguments(evaluate)
    evaluate.set_defaults(func=_eval)
    export = sub.add_parser(
        "export-hf",
        help="write the embedded SmolLM2 (or a GGUF file) as a Hugging Face folder for vLLM",
    )
    export.add_argument("dir", help="output folder")
    export.add_argument("--gguf", help="GGUF file (default: the embedded SmolLM2-135M-Instruct)")
    export.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    export.set_defaults(func=_export_hf)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
