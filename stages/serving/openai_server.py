"""An OpenAI-compatible HTTP server for an exported model (stdlib ``http.server`` + transformers).

    genesis-build serve export:tiny              # the lead's CLI wiring
    python -m stages.serving.openai_server out/export:tiny --port 8000

Endpoints (all JSON; errors use OpenAI's ``{"error": {"message", "type", "param", "code"}}``):

* ``GET  /v1/models`` (and ``/v1/models/<id>``), ``GET /health``
* ``POST /v1/chat/completions`` — ``messages`` rendered with the tokenizer's chat template;
  ``max_tokens`` / ``max_completion_tokens`` (default 256), ``temperature`` (default 1; 0 = greedy),
  ``top_p``, ``stop``, ``seed``, ``logprobs`` + ``top_logprobs``, ``stream`` (+ ``stream_options.include_usage``).
* ``POST /v1/completions`` — raw ``prompt`` (a string or a list of strings), ``max_tokens``
  (default 16), ``temperature``, ``top_p``, ``stop``, ``seed``, ``echo``, ``logprobs`` (top-k
  per token, legacy layout: ``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset``),
  ``stream``. ``echo`` + ``logprobs`` + ``max_tokens = 0`` scores a text (what lm-eval's
  ``local-completions`` model asks for).

Limits (one client must not stall the rest): at most ``max_queue`` model requests are admitted at a
time (running or waiting, in FIFO order); one more is answered ``503`` at once with ``Retry-After``.
A prompt must fit the model's context for generation *and* for scoring (``echo`` + ``logprobs``); a
prompt longer than ``context × longest token`` characters is refused before it is tokenized; at
most ``MAX_PROMPTS`` prompts per request. An unknown ``model`` is ``404`` (``model_not_found``), as
OpenAI answers; ``--api-key`` (or ``$GENESIS_API_KEY``) requires ``Authorization: Bearer KEY`` on
every route but ``/health``, and binding a non-loopback address without one prints a loud warning.

Streaming is Server-Sent Events (``data: {chunk}\\n\\n`` … ``data: [DONE]\\n\\n``) over HTTP/1.1
chunked transfer; text is produced by ``TextIteratorStreamer``. ``n`` must be 1. A request
without ``model`` is served by the one model; answers carry the served name. Generation is serialised (one model); connections are served by threads, so ``/v1/models`` answers
while a generation runs. A client that disconnects mid-stream stops its generation.

Why stdlib ``ThreadingHTTPServer`` and not FastAPI/uvicorn: a localhost server for one model and
one request at a time needs no async framework, and it adds no dependency.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

MAX_BODY = 16 * 1024 * 1024
MAX_PROMPTS = 32  # prompts in one /v1/completions request
MAX_QUEUE = 8  # model requests admitted at once (running + waiting); more get 503


class ApiError(Exception):
    """An error answered as OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type = status, message, param, type_
        self.code, self.headers = code, headers or {}


def _num(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi:
        raise ApiError(400, f"{key} must be a number in [{lo}, {hi}], got {v!r}", key)
    return float(v)


def _int(body: dict[str, Any], key: str, default: int | None, lo: int, hi: int = 1 << 30) -> int | None:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ApiError(400, f"{key} must be an integer in [{lo}, {hi}], got {v!r}", key)
    return v


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        return stop
    raise ApiError(400, "stop must be a string or a list of up to 4 strings", "stop")


def _content(message: dict[str, Any], i: int) -> str:
    c = message.get("content")
    if c is None or isinstance(c, str):
        return c or ""
    if isinstance(c, list):  # content parts: only text is supported
        texts = []
        for part in c:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(400, f"messages[{i}].content: only text parts are supported", f"messages[{i}].content")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise ApiError(400, f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "messages must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
            raise ApiError(400, f"messages[{i}].role must be system, user or assistant", f"messages[{i}].role")
        role = "system" if m["role"] == "developer" else m["role"]
        out.append({"role": role, "content": _content(m, i)})
    return out


class Server:
    """Request handling over a :class:`~stages.serving.model.ChatModel` (HTTP-free, testable)."""

    def __init__(self, chat_model: Any, max_queue: int = MAX_QUEUE, api_key: str | None = None) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.cm = chat_model
        self.created = int(time.time())
        self.max_queue = max_queue
        self.api_key = api_key or None
        self.admitted = 0  # model requests running or waiting for the model
        self._admit_lock = threading.Lock()

    def admit(self) -> None:
        """Take a queue slot for one model request, or raise 503 at once when all are taken."""
        with self._admit_lock:
            if self.admitted >= self.max_queue:
                raise ApiError(503, f"the server is busy ({self.max_queue} requests running or queued); retry shortly",
                               type_="server_error", code="server_busy", headers={"Retry-After": "1"})
            self.admitted += 1

    def leave(self) -> None:
        """Give a queue slot back (after the response, streams included, is written)."""
        with self._admit_lock:
            self.admitted -= 1

    def authorized(self, header: str | None) -> bool:
        """Whether the ``Authorization`` header carries the API key (always, when none is set)."""
        if self.api_key is None:
            return True
        want = f"Bearer {self.api_key}".encode()
        return hmac.compare_digest((header or "").encode(), want)

    def _check_model(self, body: dict[str, Any]) -> None:
        m = body.get("model")
        if m is not None and m != self.name:
            raise ApiError(404, f"The model {m!r} does not exist (this server serves {self.name!r})", "model",
                           code="model_not_found")

    def _check_length(self, prompt: str, param: str = "prompt") -> None:
        """Refuse a prompt that cannot fit the context without tokenizing all of it (bounded work)."""
        limit = self.cm.context_length * self.cm.max_token_chars
        if len(prompt) > limit:
            raise ApiError(400, f"the prompt has {len(prompt)} characters; it cannot fit the model's context of "
                           f"{self.cm.context_length} tokens (at most {limit} characters)", param)

    @property
    def name(self) -> str:
        """The served model id."""
        return self.cm.name

    def models(self) -> dict[str, Any]:
        """``GET /v1/models``."""
        return {"object": "list", "data": [self.model_card()]}

    def model_card(self) -> dict[str, Any]:
        """One model object."""
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "genesis-build",
                "root": str(self.cm.model_dir), "max_model_len": self.cm.context_length}

    def _common(self, body: dict[str, Any], default_max: int) -> dict[str, Any]:
        if _int(body, "n", 1, 1) != 1:
            raise ApiError(400, "only n = 1 is supported", "n")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return {"max_new_tokens": _int({"max_tokens": max_tokens}, "max_tokens", default_max, 0),
                "temperature": _num(body, "temperature", 1.0, 0.0, 2.0), "top_p": _num(body, "top_p", 1.0, 1e-9, 1.0),
                "seed": _int(body, "seed", None, -(1 << 63), (1 << 63) - 1), "stop": _stops(body)}

    # ---- chat
    def chat(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """``POST /v1/chat/completions``: a completion dict, or an iterator of chunks when streaming."""
        self._check_model(body)
        kw = self._common(body, 256)
        if kw["max_new_tokens"] == 0:
            raise ApiError(400, "max_tokens must be at least 1", "max_tokens")
        try:
            prompt = self.cm.render_chat(_messages(body))
        except ValueError as e:
            raise ApiError(400, str(e), "messages") from None
        self._check_length(prompt, "messages")
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._chat_stream(prompt, kw, rid, created, usage)
        top = _int(body, "top_logprobs", 0, 0, 20) if body.get("logprobs") else None
        g = self._generate(prompt, kw, chat=True, logprobs=(top or 1) if body.get("logprobs") else None)
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": g.text},
                                  "finish_reason": g.finish_reason, "logprobs": None}
        if body.get("logprobs"):
            choice["logprobs"] = {"content": [
                {"token": t, "logprob": lp, "bytes": list(t.encode()),
                 "top_logprobs": [{"token": k, "logprob": v, "bytes": list(k.encode())} for k, v in list(tl.items())[:top]]}
                for t, lp, tl in zip(g.tokens, g.token_logprobs, g.top_logprobs)]}
        return {"id": rid, "object": "chat.completion", "created": created, "model": self.name, "choices": [choice],
                "usage": self._usage(g)}

    def _chat_stream(self, prompt: str, kw: dict[str, Any], rid: str, created: int, usage: bool) -> Iterator[dict[str, Any]]:
        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""}, None)
        box: dict[str, Any] = {}
        for piece in self.cm.stream(prompt, chat=True, result=lambda g: box.setdefault("g", g), **kw):
            yield chunk({"content": piece}, None)
        g = box["g"]
        yield chunk({}, g.finish_reason)
        if usage:
            yield {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.name, "choices": [],
                   "usage": self._usage(g)}

    # ---- completions
    def completions(self, body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        """``POST /v1/completions``."""
        self._check_model(body)
        kw = self._common(body, 16)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ApiError(400, "prompt must be a string or a non-empty list of strings", "prompt")
        if len(prompts) > MAX_PROMPTS:
            raise ApiError(400, f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}", "prompt")
        for p in prompts:
            self._check_length(p)
        logprobs = _int(body, "logprobs", None, 0, 20)
        echo = bool(body.get("echo"))
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            if len(prompts) != 1 or echo or logprobs is not None:
                raise ApiError(400, "streaming supports one prompt without echo/logprobs", "stream")
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._completion_stream(prompts[0], kw, rid, created, usage)
        choices, p_tok, c_tok = [], 0, 0
        for i, p in enumerate(prompts):
            choice, g = self._completion_choice(p, kw, echo, logprobs)
            choice["index"] = i
            choices.append(choice)
            p_tok += g.prompt_tokens
            c_tok += g.completion_tokens
        return {"id": rid, "object": "text_completion", "created": created, "model": self.name, "choices": choices,
                "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}}

    def _completion_choice(self, prompt: str, kw: dict[str, Any], echo: bool, logprobs: int | None) -> tuple[dict[str, Any], Any]:
        from stages.serving.model import Generation

        scored = None
        if echo and logprobs is not None:
            n = len(self.cm.encode(prompt, False))
            if n > self.cm.context_length:  # scoring is bounded like generation: one window of the context
                raise ApiError(400, f"the prompt has {n} tokens; the model's context is {self.cm.context_length} "
                               "(scoring is limited to the context)", "prompt")
            scored = self.cm.prompt_logprobs(prompt, logprobs or 1)
        if kw["max_new_tokens"] == 0:
            if not echo:
                raise ApiError(400, "max_tokens = 0 needs echo = true (scoring the prompt)", "max_tokens")
            g = Generation("", "length", scored.prompt_tokens if scored else len(self.cm.encode(prompt, False)), 0)
        else:
            g = self._generate(prompt, kw, chat=False, logprobs=logprobs if logprobs else None)
        text = (prompt if echo else "") + g.text
        lp = None
        if logprobs is not None:
            tokens, tlp, top = [], [], []
            if scored is not None:
                tokens, tlp, top = list(scored.tokens), list(scored.token_logprobs), list(scored.top_logprobs)
            if kw["max_new_tokens"] and logprobs:
                tokens += g.tokens
                tlp += g.token_logprobs
                top += g.top_logprobs
            offsets, pos = [], 0
            for t in tokens:
                offsets.append(pos)
                pos += len(t)
            lp = {"tokens": tokens, "token_logprobs": tlp,
                  "top_logprobs": [None if d is None else dict(list(d.items())[:logprobs]) for d in top] if logprobs else None,
                  "text_offset": offsets}
        return {"text": text, "logprobs": lp, "finish_reason": g.finish_reason}, g

    def _completion_stream(self, prompt: str, kw: dict[str, Any], rid: str, created: int, usage: bool) -> Iterator[dict[str, Any]]:
        def chunk(text: str, finish: str | None) -> dict[str, Any]:
            return {"id": rid, "object": "text_completion", "created": created, "model": self.name,
                    "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

        box: dict[str, Any] = {}
        for piece in self.cm.stream(prompt, chat=False, result=lambda g: box.setdefault("g", g), **kw):
            yield chunk(piece, None)
        g = box["g"]
        yield chunk("", g.finish_reason)
        if usage:
            yield {"id": rid, "object": "text_completion", "created": created, "model": self.name, "choices": [],
                   "usage": self._usage(g)}

    # ---- helpers
    def _generate(self, prompt: str, kw: dict[str, Any], chat: bool, logprobs: int | None) -> Any:
        try:
            return self.cm.generate(prompt, chat=chat, logprobs=logprobs, **kw)
        except ValueError as e:  # e.g. prompt longer than the context
            raise ApiError(400, str(e)) from None

    @staticmethod
    def _usage(g: Any) -> dict[str, int]:
        return {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens,
                "total_tokens": g.prompt_tokens + g.completion_tokens}


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; SSE responses use chunked transfer encoding."""

    protocol_version = "HTTP/1.1"
    server: Any  # ThreadingHTTPServer with .api (Server) and .quiet

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        if not getattr(self.server, "quiet", True):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send_json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: ApiError) -> None:
        self._send_json(e.status, {"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}},
                        e.headers)

    def _authorized(self, path: str) -> bool:
        """Check the Bearer key (``/health`` stays open: it reveals nothing); answers 401 itself."""
        api: Server = self.server.api
        if path == "/health" or api.authorized(self.headers.get("Authorization")):
            return True
        self.close_connection = True  # the body (if any) was not read
        self._error(ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key",
                             headers={"WWW-Authenticate": "Bearer"}))
        return False

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        api: Server = self.server.api
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorized(path):
            return
        if path == "/v1/models":
            self._send_json(200, api.models())
        elif path.startswith("/v1/models/"):
            if path[len("/v1/models/"):] == api.name:
                self._send_json(200, api.model_card())
            else:
                self._error(ApiError(404, f"model {path[len('/v1/models/'):]!r} is not served (serving {api.name!r})",
                                     type_="not_found_error"))
        elif path == "/health":
            self._send_json(200, {"status": "ok", "model": api.name})
        else:
            self._error(ApiError(404, f"no route GET {path}", type_="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802
        api: Server = self.server.api
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorized(path):
            return
        admitted = False
        try:
            length = (self.headers.get("Content-Length") or "0").strip()
            if not length.isdigit():
                self.close_connection = True  # the body's end is unknown: this connection cannot be reused
                raise ApiError(400, f"Content-Length must be a non-negative integer, got {length!r}")
            n = int(length)
            if n > MAX_BODY:
                self.close_connection = True
                raise ApiError(413, f"request body over {MAX_BODY} bytes")
            raw = self.rfile.read(n) if n else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError as e:
                raise ApiError(400, f"body is not valid JSON: {e}") from None
            if not isinstance(body, dict):
                raise ApiError(400, "body must be a JSON object")
            if path not in ("/v1/chat/completions", "/v1/completions"):
                raise ApiError(404, f"no route POST {path}", type_="not_found_error")
            api.admit()  # 503 at once when the queue is full
            admitted = True
            out = api.chat(body) if path == "/v1/chat/completions" else api.completions(body)
            if isinstance(out, dict):
                self._send_json(200, out)
            else:
                self._stream(out)
        except ApiError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug or a model failure: one JSON error, the server keeps running
            self._error(ApiError(500, f"{type(e).__name__}: {e}", type_="server_error"))
        finally:
            if admitted:
                api.leave()

    def _stream(self, chunks: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            try:
                for c in chunks:
                    write(f"data: {json.dumps(c)}\n\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                raise
            except Exception as e:  # mid-stream failure: an error event, then the end of the stream
                write(f"data: {json.dumps({'error': {'message': f'{type(e).__name__}: {e}', 'type': 'server_error'}})}\n\n".encode())
            write(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # client went away: closing the generator cancels generation
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """A loud warning when serving beyond loopback without an API key (None when safe)."""
    if api_key:
        return None
    try:
        loopback = all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback
                       for info in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        loopback = False
    if loopback:
        return None
    return (f"WARNING: serving on {host} (reachable from other machines) WITHOUT an API key: anyone who can reach "
            "this port can use the model. Pass --api-key KEY (or set GENESIS_API_KEY), or bind 127.0.0.1.")


def make_server(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
                device: str = "auto", dtype: str = "auto", quiet: bool = True, max_queue: int = MAX_QUEUE,
                api_key: str | None = None) -> ThreadingHTTPServer:
    """Load the model and bind the server (``port=0``: any free port); call ``serve_forever``."""
    from stages.serving.model import ChatModel

    cm = ChatModel(model_dir, device=device, dtype=dtype, name=model_name)
    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    httpd.api = Server(cm, max_queue=max_queue, api_key=api_key)  # type: ignore[attr-defined]
    httpd.quiet = quiet  # type: ignore[attr-defined]
    return httpd


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, model_name: str | None = None,
          device: str = "auto", dtype: str = "auto", ready: threading.Event | None = None, quiet: bool = False,
          max_queue: int = MAX_QUEUE, api_key: str | None = None) -> None:
    """Serve ``model_dir`` until interrupted (Ctrl-C). ``model_name`` defaults to the directory name."""
    warning = exposure_warning(host, api_key)
    if warning:
        sys.stderr.write(f"\n{'!' * 78}\n{warning}\n{'!' * 78}\n\n")
        sys.stderr.flush()
    httpd = make_server(model_dir, host, port, model_name, device, dtype, quiet, max_queue, api_key)
    h, p = httpd.server_address[:2]
    print(f"serving {httpd.api.name} ({model_dir}) on http://{h}:{p}/v1  (Ctrl-C to stop)", flush=True)  # type: ignore[attr-defined]
    if ready is not None:
        ready.set()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


def main(argv: list[str] | None = None) -> None:
    """``python -m stages.serving.openai_server MODEL_DIR [--host H] [--port P] [--name N]``."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--name", default=None, help="model id to serve under (default: the directory name)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--max-queue", type=int, default=MAX_QUEUE, help="model requests admitted at once; more get 503")
    ap.add_argument("--api-key", default=os.environ.get("GENESIS_API_KEY"), help="require 'Authorization: Bearer KEY' "
                    "(default: $GENESIS_API_KEY)")
    a = ap.parse_args(argv)
    serve(a.model_dir, a.host, a.port, a.name, a.device, a.dtype, max_queue=a.max_queue, api_key=a.api_key)


if __name__ == "__main__":
    main()
