"""The `heed` command.

`heed generate` runs the same engine the server runs. Commands that need an extra (`heed export`
needs torch) are entry points of the `heed.commands` group, declared in pyproject.toml next to
the extra they need: they are loaded only when called, so the serving install never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from service.errors import HeedError
from service.options import GenerationOptions
from service.settings import EngineConfig

COMMAND_GROUP = "heed.commands"


def _option_type(annotation) -> type:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def add_decoding_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per `GenerationOptions` field, so the CLI and the HTTP API take the same options."""
    group = parser.add_argument_group("decoding options (defaults from the model's manifest)")
    for name, field in GenerationOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _option_type(field.annotation)
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        elif typing.get_origin(kind) is list:
            group.add_argument(flag, dest=name, action="append", default=None)
        else:
            group.add_argument(flag, dest=name, type=kind, default=None)


def decoding_options(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name in GenerationOptions.model_fields if getattr(args, name) is not None}


def cmd_generate(args: argparse.Namespace) -> int:
    from service.engine import Engine

    # offline: nothing else needs the cores, so ORT's idle threads may busy-wait (faster steps)
    flags = {"kv_rows": args.kv_rows, "intra_op_threads": args.threads, "provider": args.provider}
    config = EngineConfig(ort_spinning=True, **{k: v for k, v in flags.items() if v is not None})
    engine = Engine(Path(args.model), config)
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    results = engine.generate(
        texts,
        decoding_options(args),
        target_lang=args.target_lang,
        source_lang=args.source_lang,
        truncate=args.truncate,
        split_sentences=args.split_sentences,
    )
    for result in results:
        if args.json:
            print(
                json.dumps(
                    {
                        "text": result.text,
                        "token_ids": result.token_ids,
                        "input_tokens": result.input_tokens,
                        "output_tokens": result.output_tokens,
                        "finish_reason": result.finish_reason,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(result.text)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from service.http.server import serve
    from service.settings import Settings

    flags = {"model_repo": args.model_repo, "host": args.host, "port": args.port}
    return serve(Settings(**{k: v for k, v in flags.items() if v is not None}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heed", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser(
        "generate", aliases=["translate", "summarize"], help="decode texts offline with a model directory"
    )
    gen.add_argument("--model", required=True, help="model directory (holds manifest.json)")
    gen.add_argument("--text", action="append", help="input text (repeatable); default: one per line on stdin")
    gen.add_argument("--target-lang", help="target language for translation models")
    gen.add_argument("--source-lang", help="source language (M2M100 and NLLB mark it; default from the model)")
    gen.add_argument("--truncate", action="store_true", help="cut inputs longer than the model's limit")
    gen.add_argument(
        "--split-sentences",
        action="store_true",
        help="translate each text sentence by sentence, rejoined as written (the HTTP translation APIs' default)",
    )
    gen.add_argument("--json", action="store_true", help="print one JSON object per input, with token ids")
    engine_fields = EngineConfig.model_fields
    gen.add_argument("--kv-rows", type=int, help=f"rows decoded together (default {engine_fields['kv_rows'].default})")
    gen.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default 0: all cores)")
    gen.add_argument("--provider", choices=["auto", "cpu", "cuda"], help=engine_fields["provider"].description)
    add_decoding_flags(gen)
    gen.set_defaults(func=cmd_generate)

    srv = sub.add_parser("serve", help="serve every model directory of a repository over HTTP (settings: HEED_* env)")
    srv.add_argument("--model-repo", type=Path, help="directory of model directories (HEED_MODEL_REPO)")
    srv.add_argument("--host", help="address to listen on (HEED_HOST, default 127.0.0.1)")
    srv.add_argument("--port", type=int, help="port (HEED_PORT, default 8000)")
    srv.set_defaults(func=cmd_serve)

    for command in extra_commands().values():
        extras = ", ".join(command.extras)
        # listed in --help; run by `main` directly, with its own arguments
        sub.add_parser(command.name, help=f"see heed {command.name} --help (needs the {extras} extra)", add_help=False)
    return parser


def extra_commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def run_extra(command: EntryPoint, argv: list[str]) -> int:
    try:
        target = command.load()
    except ImportError as e:
        extra = command.extras[0] if command.extras else command.name
        print(
            f"heed {command.name}: needs an optional dependency ({e.name}); "
            f"install heed with the extra it names: pip install 'heed[{extra}]'",
            file=sys.stderr,
        )
        return 2
    return target(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extras = extra_commands()
    if argv and argv[0] in extras:
        return run_extra(extras[argv[0]], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HeedError as e:
        print(f"heed: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
