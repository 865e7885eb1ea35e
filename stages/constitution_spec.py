"""Spec kinds ``constitution`` (principles + critique/revision templates) and ``prompts``
(prompt sets for CAI generation). See ``stages/cai_lib/constitution.py`` and ``prompts.py``."""

from genesis_build.stage import register_kind

from stages.cai_lib.constitution import ConstitutionSpec
from stages.cai_lib.prompts import PromptsSpec

register_kind("constitution", ConstitutionSpec)
register_kind("prompts", PromptsSpec, default_stage="prompts")
