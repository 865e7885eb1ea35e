"""A minimal OpenAI-compatible HTTP server over a transformers model, for tests of the
``openai:`` generator when the project's own server (stages/serving/openai_server.py) is absent.

Serves ``GET /v1/models``, ``POST /v1/chat/completions`` (temperature, top_p, max_tokens, seed)
and ``POST /v1/completions`` (``logprobs`` = number of top tokens for the first generated token).
``fail_first`` makes the first N POSTs answer 503, to exercise client retries.

Run standalone: ``python cai_openai_server.py MODEL_DIR PORT``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ModelServer:
    """Owns the model; requests are served one at a time (a lock), like a single-GPU server."""

    def __init__(self, model_dir: str, name: str = "tiny-test-lm", fail_first: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.name = name
        self.lock = threading.Lock()
        self.fail_left = fail_first
        self.posts = 0

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self.tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        ids = self.tok(text, return_tensors="pt", add_special_tokens=False)
        temperature = float(body.get("temperature", 1.0))
        end = self.tok.convert_tokens_to_ids("<|end|>")
        with self.lock, self.torch.inference_mode():
            if body.get("seed") is not None:
                self.torch.manual_seed(int(body["seed"]))
            out = self.model.generate(**ids, max_new_tokens=int(body.get("max_tokens", 16)), do_sample=temperature > 0,
                                      temperature=temperature or None, top_p=float(body.get("top_p", 1.0)),
                                      eos_token_id=[self.tok.eos_token_id, end], pad_token_id=self.tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:].tolist()
        content = self.tok.decode([t for t in new if t not in (self.tok.eos_token_id, end)], skip_special_tokens=True)
        return {"object": "chat.completion", "model": self.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = self.tok(body["prompt"], return_tensors="pt")
        k = int(body.get("logprobs") or 0)
        with self.lock, self.torch.inference_mode():
            logits = self.model(**ids).logits[0, -1].float()
        logp = logits.log_softmax(-1)
        best = int(logp.argmax())
        choice: dict[str, Any] = {"index": 0, "text": self.tok.decode([best]), "finish_reason": "length"}
        if k:
            vals, idx = logp.topk(k)
            top = {self.tok.decode([int(i)]): float(v) for v, i in zip(vals, idx)}
            choice["logprobs"] = {"tokens": [self.tok.decode([best])], "token_logprobs": [float(logp[best])], "top_logprobs": [top]}
        return {"object": "text_completion", "model": self.name, "choices": [choice]}


def serve(model_dir: str, port: int = 0, fail_first: int = 0) -> tuple[ThreadingHTTPServer, ModelServer]:
    """Start the server on 127.0.0.1 in a daemon thread; returns (http server, model server)."""
    ms = ModelServer(model_dir, fail_first=fail_first)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": ms.name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with ms.lock:
                ms.posts += 1
                fail = ms.fail_left > 0
                ms.fail_left -= fail
            if fail:
                self._send(503, {"error": {"message": "warming up"}})
            elif self.path == "/v1/chat/completions":
                self._send(200, ms.chat(body))
            elif self.path == "/v1/completions":
                self._send(200, ms.completion(body))
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, ms


if __name__ == "__main__":
    httpd, _ = serve(sys.argv[1], int(sys.argv[2]))
    print(f"serving on {httpd.server_address}", flush=True)
    threading.Event().wait()
