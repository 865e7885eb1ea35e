"""Helpers of the ``release`` stage: GGUF export, the model card, checksums, push to the Hub."""
