import importlib.util

import pytest


def pytest_collection_modifyitems(config, items):
    """`trt` tests need the tensorrt module and a GPU; skip them cleanly where either is absent."""
    from graphfix.checks.trt_env import trt_unavailable_reason
    reason = trt_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "trt" in item.keywords:
            item.add_marker(skip)
