"""Report count keys are snake_case in every pass: PassResult.count refuses anything else, so a pass
that records a kebab-case key fails its own tests (and the whole-fixture suite) instead of shipping it."""
from __future__ import annotations

import pytest

from graphfix import fix
from graphfix.fixtures import build
from graphfix.pass_api import PassResult
from graphfix.plugin_rules.engine import count_key


@pytest.mark.parametrize("key", ["casts_inserted", "layernorms_fused", "constants_kept_int64", "chains"])
def test_snake_case_keys_are_counted(key):
    result = PassResult()
    result.count(key, 2)
    result.count(key)
    assert result.counts == {key: 3}


@pytest.mark.parametrize("key", ["casts-inserted", "near-miss.my-relu", "Casts", "", "_x", "x__y"])
def test_other_keys_are_refused(key):
    with pytest.raises(ValueError, match="snake_case"):
        PassResult().count(key)


def test_rule_names_become_snake_case_keys():
    assert [count_key(n) for n in ("fast-gelu", "skip-layer-norm-plugin", "EfficientNMS_TRT", "gelu")] == \
        ["fast_gelu", "skip_layer_norm_plugin", "efficientnms_trt", "gelu"]


def test_narrowing_and_bool_passes_report_snake_case_counts():
    _, report = fix(build("example_encoder_block"), trt="8.6", check="none")
    counts = {p.name: p.counts for p in report.passes}
    assert counts["int64-to-int32"]["sentinels_clamped"] == 1
    assert all("-" not in key for per_pass in counts.values() for key in per_pass), counts
