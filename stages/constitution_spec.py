"""Spec kind ``constitution`` (principles + critique/revision templates). See
``stages/cai_lib/constitution.py``; the ``prompts`` kind and stage are in ``stages/prompts.py``."""

from genesis_build.stage import register_kind

from stages.cai_lib.constitution import ConstitutionSpec

register_kind("constitution", ConstitutionSpec)
