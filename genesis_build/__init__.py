"""genesis-build: a declarative, content-addressed build system for language models.

The engine (this package) knows nothing about ML and never imports torch; stages live in the
top-level ``stages`` package (or any plugin module named in ``genesis.toml``).
"""

__version__ = "0.1.0"

# Bumped whenever the key material's layout changes, so old and new keys can never collide
# (DVC's lesson: a hash format without a version forced a cache migration).
KEY_SCHEMA = 1
