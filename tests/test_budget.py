"""The test suite's own limits (docs/getting-started.md#the-tests): every test runs under a per-test timeout, so a hang fails
in minutes instead of eating CI's 90; the default suite's 10-minute budget is reported by
`tests/conftest.py` (and enforced by `.ci/run`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import SUITE_BUDGET_S


def test_every_test_has_a_timeout(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is a dev dependency"
    assert 0 < float(pytestconfig.getini("timeout")) <= SUITE_BUDGET_S / 2


def test_a_hanging_test_fails_instead_of_hanging(tmp_path):
    (tmp_path / "test_hang.py").write_text(textwrap.dedent("""
        import time

        def test_hangs():
            time.sleep(120)
    """))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "timeout=2",
                          str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Timeout" in run.stdout and "1 failed" in run.stdout
