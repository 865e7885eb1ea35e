"""The fixed special tokens of every trained tokenizer (stdlib only: the ``tokenizer`` stage imports it
at module level, and ``bpe``/``encode`` import it without going through the stage).

The trainer, SFT/DPO and export stages rely on these exact strings.
"""

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
