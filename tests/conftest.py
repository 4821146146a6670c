import importlib.util
import os

import pytest

# Where TensorRT-RTX must be present (CI installs graphfix[rtx]), a missing one fails the `rtx` tests
# instead of skipping them.
REQUIRE_RTX = bool(os.environ.get("GRAPHFIX_REQUIRE_RTX") or os.environ.get("CI"))


def pytest_collection_modifyitems(config, items):
    """`trt` tests need the tensorrt module and a GPU; skip them cleanly where either is absent.
    `rtx` tests need the TensorRT-RTX wheels (no GPU): skipped where absent, except in CI."""
    from graphfix.checks.tensorrt.env import rtx_unavailable_reason, trt_unavailable_reason
    if any("rtx" in item.keywords for item in items):
        rtx_reason = rtx_unavailable_reason()
        if rtx_reason is not None:
            mark = pytest.mark.skip(reason=rtx_reason) if not REQUIRE_RTX else None
            for item in items:
                if "rtx" in item.keywords:
                    if mark is not None:
                        item.add_marker(mark)
                    else:
                        item.add_marker(pytest.mark.usefixtures("_rtx_required"))
    reason = trt_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "trt" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def _rtx_required():
    from graphfix.checks.tensorrt.env import rtx_unavailable_reason
    pytest.fail(f"TensorRT-RTX is required here (CI / GRAPHFIX_REQUIRE_RTX) but unusable: {rtx_unavailable_reason()}")
