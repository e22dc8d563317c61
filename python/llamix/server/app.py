"""The OpenAI-compatible HTTP server: a Starlette application over a :class:`BatchEngine`.

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (server-sent
events with ``"stream": true``, ending ``data: [DONE]``; OpenAI's ``n`` choices run as ``n`` requests
batched together, choices.py), ``POST /v1/embeddings``, ``GET /health``,
``GET /metrics``, and llama-server's own ``/completion``, ``/tokenize``, ``/detokenize``,
``/apply-template`` and ``GET /props`` (native.py). Requests are shaped by the model's own API
(``prepare_completion`` / ``prepare_chat_completion`` / ``create_embedding``, the functions
``llamix.Model`` offers in process), run by the batch engine, and errors come back as OpenAI error objects
(``{"error": {"message", "type", "param", "code"}}``): 400 for a malformed body, a field of the
wrong type or a prompt beyond the context (with both sizes), 401 for a missing or wrong API key
(``Authorization: Bearer KEY``, compared in constant time; ``/health`` and ``/v1/models`` need
none, as with llama-server), 404 / 405,
413 for a body over ``max_body_bytes``, 503 when the queue is full or the server is stopping.

A client that goes away (closes a stream, or drops a waiting request) cancels its request: its
slot is free at the next step. Each answered request writes one JSON line to the
``llamix.server.access`` logger.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import re
import time
from typing import Any, AsyncIterator, Callable

import anyio
import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import FormatError
from ..model import BatchEngine, EngineStopped, Job, Model, QueueFull
from ..model.api import TextCompletion
from ..model.engine import Request, Step
from . import choices, native
from .metrics import CONTENT_TYPE, Metrics
from .params import type_of as _type_name
from .params import (BadRequest, chat_kwargs, completion_kwargs, embedding_input, native_completion_kwargs,
                     native_completion_prompt, native_detokenize_body, native_prompt_ids, native_template_body,
                     native_tokenize_body, n_choices, param_named)

ACCESS_LOG = logging.getLogger("llamix.server.access")
MAX_BODY_BYTES = 8 << 20   # a request body larger than this is refused (413)
_CONTEXT = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code, **extra}},
                        status_code=status)


def _bad_request(e: Exception, prompt_param: str | None = None) -> JSONResponse:
    """The 400 of a refused request. ``prompt_param``: the field holding the endpoint's prompt,
    named by the errors about the prompt (its size, its tokens) that come from the model."""
    msg = str(e)
    m = _CONTEXT.search(msg)
    if m:
        return error_response(400, f"the prompt ({m[1]} tokens) does not fit the context of {m[2]} tokens per slot",
                              param=prompt_param, code="context_length_exceeded", n_prompt_tokens=int(m[1]),
                              n_ctx=int(m[2]))
    if isinstance(e, BadRequest):
        return error_response(400, msg, param=e.param, code=e.code, **e.extra)
    return error_response(400, msg, param=param_named(msg, prompt_param))


class _Feed:
    """A request's steps handed from the engine thread to the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.items = loop, asyncio.Queue()

    def sink(self, item) -> None:   # on the engine thread
        with contextlib.suppress(RuntimeError):   # the loop is closed: nobody listens any more
            self.loop.call_soon_threadsafe(self.items.put_nowait, item)

    async def __aiter__(self) -> AsyncIterator:
        while True:
            item = await self.items.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _JobStream(StreamingResponse):
    """Server-sent events of a request's jobs; however the response ends (done, client gone,
    shutdown), the jobs are cancelled, which frees their slots."""

    def __init__(self, content, jobs: list[Job]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.jobs = jobs

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for job in self.jobs:
                job.cancel()


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class Server:
    """The application's state: the model, its engine, the served name, the key and the metrics."""

    def __init__(self, model: Model, engine: BatchEngine, name: str, api_key: str | None, max_body_bytes: int):
        self.model, self.engine, self.name = model, engine, name
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes
        self.metrics = Metrics(engine)
        self.created = int(time.time())

    # --- plumbing --------------------------------------------------------------------------------------
    async def read_json(self, request: HTTPRequest) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > self.max_body_bytes:
            raise _Refused(error_response(413, f"the request body ({size} bytes) is over the limit of "
                                               f"{self.max_body_bytes} bytes", code="request_too_large"))
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > self.max_body_bytes:
                raise _Refused(error_response(413, f"the request body is over the limit of {self.max_body_bytes} "
                                                   "bytes", code="request_too_large"))
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _Refused(error_response(400, f"the request body is not valid JSON: {e}", code="invalid_json")) \
                from None

    def submit(self, request: HTTPRequest, reqs: list[Request]) -> list[tuple[Job, _Feed]] | Response:
        """``reqs`` (one request's choices) queued on the engine, each with a feed of its steps; or
        the error response, with none of them left queued."""
        loop = asyncio.get_running_loop()
        submitted: list[tuple[Job, _Feed]] = []
        try:
            for req in reqs:
                feed = _Feed(loop)
                submitted.append((self.engine.submit(req, feed.sink), feed))
        except (QueueFull, EngineStopped, ValueError) as e:
            for job, _ in submitted:
                job.cancel()
            if isinstance(e, ValueError):
                return _bad_request(e)
            return error_response(503, str(e), type_="server_error",
                                  code="queue_full" if isinstance(e, QueueFull) else "unavailable")
        request.state.jobs = [job for job, _ in submitted]
        return submitted

    async def steps(self, request: HTTPRequest, submitted: list[tuple[Job, _Feed]]) -> list[list[Step]] | Response:
        """All steps of each job, or the error response (shutdown, client gone)."""
        jobs = [job for job, _ in submitted]
        results: list[list[Step]] = [[] for _ in submitted]
        stopped = False

        async def collect(i: int, feed: _Feed) -> None:
            nonlocal stopped
            try:
                results[i] = [s async for s in feed]
            except EngineStopped:   # the server's shutdown deadline ended the request
                stopped = True

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_cancel_on_disconnect, request, jobs)
                try:
                    await asyncio.gather(*(collect(i, feed) for i, (_, feed) in enumerate(submitted)))
                finally:
                    tg.cancel_scope.cancel()
        finally:
            for job in jobs:   # the handler itself was cancelled (shutdown): free the slots; no-op once done
                job.cancel()
        if stopped:
            return error_response(503, "the server is shutting down: the request was stopped", type_="server_error",
                                  code="unavailable")
        if any(job.cancelled and not job.request.done for job in jobs):
            return error_response(499, "the client closed the request", code="client_closed")
        return results

    async def answer(self, request: HTTPRequest, reqs: list[Request], stream: bool,
                     events: Callable[[list[tuple[Job, _Feed]]], AsyncIterator[str]],
                     whole: Callable[[list[list[Step]], list[Job]], dict]) -> Response:
        """Run ``reqs`` (one request's choices) on the engine: the server-sent ``events(submitted)``
        when ``stream``, else the JSON of ``whole(steps, jobs)``; or the error response (queue
        full, shutdown, client gone)."""
        submitted = self.submit(request, reqs)
        if isinstance(submitted, Response):
            return submitted
        jobs = [job for job, _ in submitted]
        if stream:
            return _JobStream(events(submitted), jobs)
        steps = await self.steps(request, submitted)
        return steps if isinstance(steps, Response) else JSONResponse(whole(steps, jobs))

    async def run_jobs(self, request: HTTPRequest, prepared: list[TextCompletion], stream: bool,
                       usage: bool, n: int | None = None) -> Response:
        """Answer with ``prepared``'s choices (OpenAI's ``n``; one for most requests): ``n`` of
        each prompt, prompt after prompt (default: all of one prompt)."""
        return await self.answer(request, [p.request for p in prepared], stream,
                                 lambda submitted: self._events(prepared, [feed for _, feed in submitted], usage, n),
                                 lambda steps, jobs: choices.merged_response(
                                     [p.response(s) for p, s in zip(prepared, steps)], n))

    async def _events(self, prepared: list[TextCompletion], feeds: list[_Feed], usage: bool,
                      n: int | None = None) -> AsyncIterator[str]:
        """The choices' chunks as their steps come, each labelled with its choice's index."""
        head = prepared[0].head
        for i, p in enumerate(prepared):
            for chunk in p.first_chunks():
                yield _sse(choices.relabel(chunk, i, head))
        arrivals: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, feed: _Feed) -> None:
            try:
                async for step in feed:
                    arrivals.put_nowait((i, step))
                arrivals.put_nowait((i, None))
            except Exception as e:  # noqa: BLE001 - handed to the stream below
                arrivals.put_nowait((i, e))

        pumps = [asyncio.ensure_future(pump(i, feed)) for i, feed in enumerate(feeds)]
        try:
            running = len(feeds)
            while running:
                i, item = await arrivals.get()
                if isinstance(item, Exception):   # the stream has started: the error goes as an event
                    yield _sse({"error": {"message": str(item), "type": "server_error", "param": None, "code": None}})
                    yield "data: [DONE]\n\n"
                    return
                if item is None:
                    running -= 1
                    for chunk in prepared[i].last_chunks():
                        yield _sse(choices.relabel(chunk, i, head))
                    continue
                chunk = prepared[i].chunk(item)
                if chunk is not None:
                    yield _sse(choices.relabel(chunk, i, head))
        finally:
            for task in pumps:
                task.cancel()
        if usage:
            yield _sse(choices.merged_usage_chunk([p.usage_chunk() for p in prepared], n))
        yield "data: [DONE]\n\n"

    async def _prepared(self, prepare: Callable[..., TextCompletion], kw: dict, n: int,
                        on_engine: bool = False) -> list[TextCompletion]:
        """``n`` choices of one request, each prepared by ``prepare(**kw)``; a given ``seed`` is
        choice i's ``seed + i`` (without one, each choice draws its own). ``on_engine``: prepare on
        the engine's thread (preparing runs the model)."""
        out = []
        for i in range(n):
            kw_i = {**kw, "seed": kw["seed"] + i} if kw.get("seed") is not None else kw
            if on_engine:
                out.append(await asyncio.wrap_future(self.engine.call(prepare, model=self.name, **kw_i)))
            else:
                out.append(await run_in_threadpool(prepare, model=self.name, **kw_i))
        return out

    # --- endpoints -------------------------------------------------------------------------------------
    async def health(self, request: HTTPRequest) -> Response:
        e = self.engine
        return JSONResponse({"status": "ok", "slots_idle": e.n_parallel - e.slots_busy,
                             "slots_processing": e.slots_busy, "queue_depth": e.queue_depth})

    async def models(self, request: HTTPRequest) -> Response:
        c = self.model.config
        return JSONResponse({"object": "list", "data": [{
            "id": self.name, "object": "model", "created": self.created, "owned_by": "llamix",
            "meta": {"n_ctx_slot": self.model.n_ctx, "n_parallel": self.engine.n_parallel,
                     "n_ctx_train": c.context_length, "n_vocab": c.vocab_size, "n_embd": c.dim}}]})

    # --- LoRA adapters (llama-server's /lora-adapters and per-request "lora") ---------------------------
    def adapters(self) -> list[dict]:
        """The adapters folded into the weights at load, as llama-server lists its adapters."""
        return [{"id": i, "path": path, "scale": scale, "task_name": "", "prompt_prefix": ""}
                for i, (path, scale) in enumerate(getattr(self.model.checkpoint, "lora_adapters", []))]

    def check_lora(self, given: Any, per_request: bool = True) -> None:
        """llama-server's ``lora``: ``[{"id": ID, "scale": S}, ...]``, the adapters' scales (an
        adapter left out: scale 0; a request's empty list: the server's scales, as llama-server
        takes it). llamix folds its adapters into the weights at load, so the list is taken only
        when it asks for the scales loaded; anything else is a 400 naming the adapter, rather than
        an answer from other weights than the client asked for."""
        loaded = self.adapters()

        def refuse(message: str) -> None:
            raise _Refused(error_response(400, message, param="lora", code="invalid_lora"))
        if not isinstance(given, list):
            refuse(f"lora must be a list of {{\"id\", \"scale\"}} objects, got {_type_name(given)}")
        if per_request and not given:
            return
        asked = {a["id"]: 0.0 for a in loaded}
        for k, entry in enumerate(given):
            if not isinstance(entry, dict):
                refuse(f"lora[{k}] must be an object {{\"id\", \"scale\"}}, got {_type_name(entry)}")
            i, scale = entry.get("id", -1), entry.get("scale", 0.0)
            if isinstance(i, bool) or not isinstance(i, int) or i not in asked:
                refuse(f"lora[{k}].id: invalid adapter id {i!r} (loaded: "
                       f"{', '.join(str(a['id']) for a in loaded) or 'none'}; GET /lora-adapters lists them)")
            if isinstance(scale, bool) or not isinstance(scale, (int, float)):
                refuse(f"lora[{k}].scale must be a number, got {_type_name(scale)}")
            asked[i] = float(scale)
        for a in loaded:
            if asked[a["id"]] != a["scale"]:
                refuse(f"lora: adapter {a['id']} ({a['path']}) at scale {asked[a['id']]:g}: llamix folds its adapters "
                       f"into the weights at load (scale {a['scale']:g}) and cannot change their scale while serving; "
                       "start the server with --lora-scaled FNAME SCALE instead")

    async def lora_adapters(self, request: HTTPRequest) -> Response:
        """llama-server's ``GET /lora-adapters``: ``[{"id", "path", "scale"}]``."""
        return JSONResponse(self.adapters())

    async def set_lora_adapters(self, request: HTTPRequest) -> Response:
        """llama-server's ``POST /lora-adapters``: accepted when it asks for the loaded scales."""
        self.check_lora(await self.read_json(request), per_request=False)
        return JSONResponse({"success": True})

    async def metrics_text(self, request: HTTPRequest) -> Response:
        return Response(self.metrics.text(), media_type=CONTENT_TYPE)

    async def completions(self, request: HTTPRequest) -> Response:
        body = await self.read_json(request)
        if isinstance(body, dict) and "lora" in body:
            self.check_lora(body["lora"])
        try:
            kw, prompts, stream, usage = completion_kwargs(body)
            n = n_choices(body)
            prepared = []
            for prompt in prompts:   # n choices of each prompt, in order
                # echo with logprobs runs the prompt through the model: on the engine thread
                prepared += await self._prepared(self.model.prepare_completion, {**kw, "prompt": prompt}, n,
                                                 on_engine=bool(kw.get("echo") and kw.get("logprobs") is not None))
        except ValueError as e:
            return _bad_request(e, "prompt")
        return await self.run_jobs(request, prepared, stream, usage, n)

    async def chat_completions(self, request: HTTPRequest) -> Response:
        body = await self.read_json(request)
        if isinstance(body, dict) and "lora" in body:
            self.check_lora(body["lora"])
        try:
            kw, stream, usage = chat_kwargs(body)
            prepared = await self._prepared(self.model.prepare_chat_completion, kw, n_choices(body))
        except ValueError as e:
            return _bad_request(e, "messages")
        return await self.run_jobs(request, prepared, stream, usage)

    async def embeddings(self, request: HTTPRequest) -> Response:
        body = await self.read_json(request)
        try:
            c = self.model.config
            inputs, b64 = embedding_input(body, c.vocab_size, c.dim)
            result = await asyncio.wrap_future(self.engine.call(self.model.create_embedding, inputs, model=self.name,
                                                                    truncate=False))   # 400, as OpenAI's
        except ValueError as e:
            return _bad_request(e, "input")
        except EngineStopped as e:
            return error_response(503, str(e), "server_error")
        if b64:   # the openai client asks for base64 float32 by default
            for d in result["data"]:
                d["embedding"] = base64.b64encode(np.asarray(d["embedding"], dtype="<f4").tobytes()).decode()
        request.state.usage = result["usage"]
        return JSONResponse(result)

    # --- llama-server's own endpoints (native.py) ------------------------------------------------------
    async def completion(self, request: HTTPRequest) -> Response:
        """llama-server's ``/completion``."""
        body = await self.read_json(request)
        if isinstance(body, dict) and "lora" in body:
            self.check_lora(body["lora"])
        m = self.model
        try:
            kw, stream, options = native_completion_kwargs(body)
            ids = await run_in_threadpool(native_prompt_ids, m, native_completion_prompt(body), True)
            # n_predict 0 generates nothing: the request is shaped, never run
            req = m.new_request(ids, **{**kw, "max_tokens": 1 if options["n_predict"] == 0 else kw["max_tokens"]})
        except ValueError as e:
            return _bad_request(e, "prompt")
        settings = native.settings_of(kw, options, req.stops, m.n_ctx)
        prompt_text = b"".join(m.tokenizer.pieces(ids)).decode("utf-8", errors="replace")
        shaped = native.NativeCompletion(req, prompt_text, self.name, settings, options, m.n_ctx)
        if options["n_predict"] == 0:   # nothing to generate (llama-server would only fill the cache)
            return JSONResponse(shaped.final([], None, False))
        return await self.answer(request, [req], stream, lambda submitted: self._native_events(shaped, *submitted[0]),
                                 lambda steps, jobs: shaped.final(steps[0], jobs[0], False))

    async def _native_events(self, shaped: native.NativeCompletion, job: Job, feed: _Feed) -> AsyncIterator[str]:
        steps = []
        try:
            async for step in feed:
                steps.append(step)
                event = shaped.event(step)
                if event is not None:
                    yield _sse(event)
        except Exception as e:  # noqa: BLE001 - the stream has started: the error goes as an event
            yield _sse({"error": {"code": 500, "message": str(e), "type": "server_error"}})
            return
        yield _sse(shaped.final(steps, job, True))

    async def tokenize(self, request: HTTPRequest) -> Response:
        body = await self.read_json(request)
        try:
            content, add_special, parse_special, pieces = native_tokenize_body(body)
            ids = native_prompt_ids(self.model, content, add_special, parse_special, field="content")
            tokens = native.with_pieces(ids, self.model.tokenizer.pieces(ids)) if pieces else ids
        except ValueError as e:   # also: ids out of the vocabulary, a model without a tokenizer
            return _bad_request(e, "content")
        return JSONResponse({"tokens": tokens})

    async def detokenize(self, request: HTTPRequest) -> Response:
        body = await self.read_json(request)
        try:
            tok = self.model._tok()   # ArgumentError (400) for a model without a tokenizer
            ids = native_detokenize_body(body, tok.vocab_size)
        except ValueError as e:
            return _bad_request(e)
        return JSONResponse({"content": b"".join(tok.pieces(ids)).decode("utf-8", errors="replace")})

    async def apply_template(self, request: HTTPRequest) -> Response:
        """llama-server's ``/apply-template``: the chat prompt of ``messages``, not run."""
        body = await self.read_json(request)
        try:
            kw, add_generation_prompt = native_template_body(body)
            prompt = await run_in_threadpool(self.model.apply_chat_template, kw["messages"], add_generation_prompt,
                                             tools=kw.get("tools"))
        except ValueError as e:
            return _bad_request(e, "messages")
        return JSONResponse({"prompt": prompt})

    async def props(self, request: HTTPRequest) -> Response:
        """llama-server's ``GET /props``: the slots' settings, the model and its chat template."""
        m = self.model
        defaults = native.settings_of({}, {"n_predict": -1, "n_probs": 0}, [], m.n_ctx)
        try:
            template = m.chat_formatter().template
        except ValueError:
            template = ""
        tok = m.tokenizer
        special = {f"{kind}_token": b"".join(tok.pieces([i])).decode("utf-8", errors="replace")
                   for kind, i in (("bos", tok.bos_id if tok else -1), ("eos", tok.eos_id if tok else -1)) if i >= 0}
        return JSONResponse({"default_generation_settings": {"n_ctx": m.n_ctx, "params": defaults},
                             "total_slots": self.engine.n_parallel, "model_alias": self.name, "model_path": m.source,
                             "chat_template": template or "", "modalities": {"vision": False, "audio": False},
                             **special, "build_info": "llamix"})


class _Refused(Exception):
    """An early answer (a body too large or not JSON) raised out of a helper."""

    def __init__(self, response: Response):
        self.response = response


async def _cancel_on_disconnect(request: HTTPRequest, jobs: list[Job]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
    for job in jobs:
        job.cancel()


class _Gate:
    """ASGI middleware: the API key, the access log and the request metrics."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [0]

        async def send_status(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path = scope["path"]
        key = self.server.api_key
        try:
            if key is not None and path not in _PUBLIC_PATHS and not _authorized(scope, key):
                await error_response(401, "invalid or missing API key (Authorization: Bearer KEY)",
                                     "authentication_error", code="invalid_api_key")(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self._log(scope, status[0] or 499, time.perf_counter() - t0)

    def _log(self, scope, status: int, seconds: float) -> None:
        state = scope.get("state", {})
        jobs: list[Job] = state.get("jobs") or []
        path = scope["path"]
        record = {"ts": round(time.time(), 3), "client": (scope.get("client") or ("", 0))[0],
                  "method": scope["method"], "path": path, "status": status, "duration_ms": round(seconds * 1e3, 1)}
        m = self.server.metrics
        if jobs:   # the first choice's, with every choice's tokens (OpenAI's n)
            job, r = jobs[0], jobs[0].request
            record.update(prompt_tokens=len(r.prompt), prompt_evaluated=job.n_prompt_evaluated,
                          completion_tokens=sum(len(j.request.tokens) for j in jobs), finish_reason=r.finish_reason)
            if len(jobs) > 1:
                record["n"] = len(jobs)
            if job.t_first is not None:
                record["ttft_ms"] = round((job.t_first - job.t_submit) * 1e3, 1)
                m.ttft.observe(job.t_first - job.t_submit)
            m.duration.observe(seconds)
        elif state.get("usage"):
            record.update(prompt_tokens=state["usage"]["prompt_tokens"])
        m.requests.labels(path if path in _PATHS else "other", str(status)).inc()
        ACCESS_LOG.info(json.dumps(record))


def _authorized(scope, key: bytes) -> bool:
    given = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            given = value
    scheme, _, token = given.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), key)


# Open without the API key, as llama-server leaves them: a client can check the server is up and
# which model it serves before it has a key.
_PUBLIC_PATHS = {"/health", "/v1/health", "/v1/models", "/models"}
_PATHS = {"/health", "/v1/health", "/metrics", "/v1/models", "/models", "/v1/completions", "/v1/chat/completions",
          "/chat/completions", "/v1/embeddings", "/completion", "/completions", "/tokenize", "/detokenize",
          "/apply-template", "/props", "/lora-adapters"}


def create_app(model: Model, n_parallel: int = 4, *, name: str | None = None, api_key: str | None = None,
               max_queue: int = 64, max_body_bytes: int = MAX_BODY_BYTES, n_batch: int | None = None,
               shutdown_timeout: float = 10.0) -> Starlette:
    """The ASGI application serving ``model`` with ``n_parallel`` KV cache slots of ``model.n_ctx``
    positions each, at most ``max_queue`` requests waiting (503 beyond). ``name``: the model id
    clients see (default: the file's name). The engine thread starts and stops with the
    application's lifespan; at shutdown requests still running get ``shutdown_timeout`` seconds.
    A chat template that does not parse is a FormatError here, as llama-server refuses to start
    with one (each chat request would otherwise get the server's fault as a 400)."""
    try:
        model.chat_formatter().compile()
    except FormatError:
        raise
    except ValueError:   # no tokenizer, no template to choose: the chat endpoints say so per request
        pass
    engine = BatchEngine(model, n_parallel, max_queue, **({"n_batch": n_batch} if n_batch else {}))
    served = name or model.source.rstrip("/").rsplit("/", 1)[-1]
    server = Server(model, engine, served, api_key, max_body_bytes)

    def endpoint(fn):
        async def handle(request: HTTPRequest) -> Response:
            try:
                return await fn(request)
            except _Refused as r:
                return r.response
        return handle

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            await run_in_threadpool(engine.stop, shutdown_timeout)

    async def http_error(request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, exc.detail or "error", "invalid_request_error",
                              code="not_found" if exc.status_code == 404 else None)

    async def internal_error(request, exc: Exception) -> Response:
        return error_response(500, f"internal error: {exc}", "server_error")

    routes = [Route(path, endpoint(fn), methods=[method]) for path, (method, fn) in {
        "/health": ("GET", server.health), "/v1/health": ("GET", server.health),
        "/metrics": ("GET", server.metrics_text),
        "/v1/models": ("GET", server.models), "/models": ("GET", server.models),
        "/v1/completions": ("POST", server.completions),
        "/v1/chat/completions": ("POST", server.chat_completions),
        "/chat/completions": ("POST", server.chat_completions),
        "/v1/embeddings": ("POST", server.embeddings),
        # llama-server's own API (its /completions is its native one, not OpenAI's)
        "/completion": ("POST", server.completion), "/completions": ("POST", server.completion),
        "/tokenize": ("POST", server.tokenize), "/detokenize": ("POST", server.detokenize),
        "/apply-template": ("POST", server.apply_template), "/props": ("GET", server.props)}.items()]
    routes += [Route("/lora-adapters", endpoint(server.lora_adapters), methods=["GET"]),
               Route("/lora-adapters", endpoint(server.set_lora_adapters), methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: internal_error})
    app.add_middleware(_Gate, server=server)
    app.state.server = server
    return app
