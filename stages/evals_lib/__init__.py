"""Evaluation library behind the ``eval-data`` / ``eval`` stages (stages/evals.py).

Modules (torch is imported only by :mod:`lm` and inside functions; ``spec``, ``data``, ``scoring``,
``judges`` and the metric functions are stdlib-only so the stage files stay light):

* :mod:`spec` — the ``evals`` spec kind (``specs/evals/<name>.toml``).
* :mod:`data` — loading suite items from files, dataset ids or the built-in sets in ``builtin/``.
* :mod:`lm` — a transformers model: log-likelihoods computed the way lm-evaluation-harness does, and
  batched chat generation.
* :mod:`truthfulqa`, :mod:`harmbench`, :mod:`xstest`, :mod:`engagement` — one suite each.
* :mod:`judges` — the documented refusal detector and OpenAI-compatible judge endpoints.
* :mod:`scoring` — means, standard errors and the lm-eval-like results layout.
* :mod:`runner` — runs one suite on one model and returns its results.
* :mod:`report_render` — the HTML/PNG report (``render_report``).
"""
