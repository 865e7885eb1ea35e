"""Serving an exported model: an OpenAI-compatible HTTP server and a terminal chat.

* :func:`stages.serving.openai_server.serve` — ``/v1/chat/completions``, ``/v1/completions``
  (both with SSE streaming), ``/v1/models`` on a local port (``genesis-build serve TARGET``).
* :func:`stages.serving.chat.chat` — a chat loop in the terminal using the tokenizer's chat
  template (``genesis-build chat TARGET``).

Both load the model through :mod:`stages.serving.model` (transformers; imported lazily).
"""
