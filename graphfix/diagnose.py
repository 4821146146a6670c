"""Compatibility name: `graphfix check` lives in graphfix.diagnosis (split by job: facts, predicates,
checker, result, real parser). Import from there; this module only re-exports its public names."""
from __future__ import annotations

from .diagnosis import (KNOWN_TRT_PLUGINS, PREDICATES, PROBLEM_SEVERITIES, SCHEMA, SEVERITY_ORDER, CheckResult,
                        Finding, ModelFacts, check_model, format_table, run_real_parser, run_rtx_parser)

RULES = PREDICATES   # the profile checks' vocabulary, by its former name

__all__ = ["Finding", "CheckResult", "ModelFacts", "check_model", "run_real_parser", "run_rtx_parser", "format_table",
           "RULES", "SCHEMA", "PROBLEM_SEVERITIES", "SEVERITY_ORDER", "KNOWN_TRT_PLUGINS"]
