"""``llamix serve -m MODEL``: an OpenAI-compatible HTTP server with continuous batching
(llama-server's flags: ``--host``, ``--port``, ``-np/--parallel``, ``-c``, ``-t``, ``--api-key``).

``-c`` is the KV cache size in all, split evenly between the ``--parallel`` slots, as
llama-server splits it; by default each slot gets the model's context (at most 2048). SIGTERM or
Ctrl-C stops the server: running requests get ``--shutdown-timeout`` seconds to finish.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading

from ..loaders import SHAPES
from .common import (MODEL_HELP, TOKENIZER_HELP, UsageError, add_ctx, add_gpu_flags, add_lora, add_kv_cache,
                     add_llama_cpp_loading, add_qtype, add_threads, check, check_threads, quiet_requested, warn_ctx)
from .model_inputs import add_chat_template, open_model

try:   # the serve extra: starlette, uvicorn, prometheus_client
    from ..server import serve
    _MISSING = None
except ModuleNotFoundError as e:
    if e.name not in ("starlette", "uvicorn", "prometheus_client", "anyio"):
        raise
    serve, _MISSING = None, e.name


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help=MODEL_HELP)
    src.add_argument("--random", metavar="SHAPE", choices=list(SHAPES),
                     help=f"no download: a random-weight model of this shape ({', '.join(SHAPES)}); its text is gibberish")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080, help="TCP port")
    p.add_argument("-np", "--parallel", type=int, default=4, metavar="N",
                   help="KV cache slots: requests decoded together in one batch")
    add_ctx(p, what="KV cache positions in all, split evenly between the slots "
                    "(default: the model's context per slot, at most 2048)")
    add_threads(p)
    add_gpu_flags(p)
    add_llama_cpp_loading(p, batch=False)
    p.add_argument("-b", "--batch-size", type=int, default=512, metavar="N",
                   help="at most N tokens (decodes and prompt chunks) per forward pass")
    p.add_argument("-cb", "--cont-batching", action="store_true", dest="_cont_batching",
                   help="accepted as llama-server's flag: llamix serve always batches continuously")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("LLAMIX_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $LLAMIX_API_KEY; none: no key)")
    p.add_argument("-a", "--alias", metavar="NAME", help="the model id clients see (default: the file's name)")
    add_chat_template(p)
    p.add_argument("--max-queue", type=int, default=64, metavar="N",
                   help="requests waiting for a slot before new ones get 503")
    p.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="S",
                   help="seconds running requests get to finish at SIGTERM (then: a 503 error, or an error event "
                        "and [DONE] in a stream)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    add_qtype(p)
    add_kv_cache(p)
    add_lora(p)


def run(args) -> int:
    check_threads(args)
    check(1 <= args.parallel <= 256, "-np/--parallel", f"must be in 1..256, got {args.parallel}")
    check(0 < args.port < 65536, "--port", f"must be in 1..65535, got {args.port}")
    check(args.batch_size >= 1, "-b/--batch-size", f"must be >= 1, got {args.batch_size}")
    check(args.max_queue >= 0, "--max-queue", f"must be >= 0, got {args.max_queue}")
    check(args.shutdown_timeout >= 0, "--shutdown-timeout", f"must be >= 0, got {args.shutdown_timeout}")
    if args.ctx_size is not None:
        check(args.ctx_size == 0 or args.ctx_size >= args.parallel, "-c/--ctx-size",
              f"must give each of the {args.parallel} slots at least one position (or be 0: the model's training "
              f"context), got {args.ctx_size}")
    if serve is None:
        raise UsageError(f"llamix serve needs the 'serve' extra ({_MISSING} is not installed): "
                         "pip install 'llamix[serve]'")
    sock = bind_socket(args.host, args.port)   # before the model loads: a busy port fails at once
    try:
        model = open_model(args, slots=args.parallel, chat_format=args.chat_format)   # n_ctx: one slot's
    except BaseException:
        sock.close()
        raise
    warn_ctx("serve", model.n_ctx, model.config)
    if not quiet_requested(args):  # what llama-server says as it starts: the model, its slots and their context
        lora = "".join(f"; LoRA {path} (scale {scale:g}) folded in" for path, scale in model.checkpoint.lora_adapters)
        print(f"llamix serve: {model!r}{lora}; {args.parallel} slot(s) of {model.n_ctx} tokens, chat format "
              f"{model.chat_format or 'from the model'}; http://{args.host}:{args.port}/v1", file=sys.stderr)
    # SIGTERM ends the server cleanly: uvicorn shuts down, then passes the signal on (ignored here)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if main else None
    try:
        serve(model, args.host, args.port, args.parallel, name=args.alias, api_key=args.api_key or None,
              max_queue=args.max_queue, n_batch=args.batch_size, shutdown_timeout=args.shutdown_timeout, sock=sock)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (IPv6 when the host has a ':', as uvicorn decides), or a
    UsageError naming --host / --port (an unknown name, a port in use, an address not here)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        addr = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)[0][4]
    except socket.gaierror as e:
        raise UsageError(f"--host {host!r}: no such address to listen on ({e.strerror})") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as uvicorn: restart while old connections wait
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None
    sock.set_inheritable(True)
    return sock
