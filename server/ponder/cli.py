"""`ponder serve`: the command-line entry point."""

from __future__ import annotations

import argparse
import logging
import sys

from .config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api import create_app

    overrides = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "model": args.model,
            "model_name": args.model_name,
            "default_strategy": args.strategy,
            "log_level": args.log_level,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)
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
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
