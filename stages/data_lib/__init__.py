"""Library code of the data stages (corpus, tokenizer, tokenize).

Imported lazily by ``stages/corpus.py``, ``stages/tokenizer.py`` and ``stages/tokenize.py`` inside
their ``run`` functions: modules here may import numpy, pyarrow, datasets and tokenizers at top level,
except ``paths`` and ``special_tokens`` (stdlib only), which the stage files import at module level.
"""
