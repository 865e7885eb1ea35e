"""Conversation data for instruction tuning (the ``chat`` spec kind and the ``instruct`` stage).

Light (pydantic + stdlib + xxhash; safe to import from stage modules and spec validation):
  spec      the ``chat`` spec model: sources, filters, weights, validation split
  builtin   the built-in dialogues written for this project (``builtin_chat.jsonl``)

Heavy (imported only inside ``run``):
  data      reading sources (JSONL / JSON / Parquet / ``datasets`` dir / hub id), validating the
            ``messages`` layout, filters, dedup, weighted mixture and the validation split
"""
