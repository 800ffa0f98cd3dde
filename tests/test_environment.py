"""The suite's own hygiene: a test's changes to the process environment end with it.

The two tests run in file order: the first changes the environment as a dask Nanny does
in its parent process, the second checks that the change did not outlive the first.
"""

import os

_PROBE = "NUCLEOSEG_ENVIRONMENT_PROBE"
_BEFORE: dict[str, str | None] = {}


def test_a_test_changes_the_environment_as_a_dask_nanny_does():
    assert _PROBE not in os.environ
    _BEFORE["MALLOC_TRIM_THRESHOLD_"] = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    os.environ[_PROBE] = "1"
    os.environ["MALLOC_TRIM_THRESHOLD_"] = "1"


def test_the_next_test_starts_from_the_environment_before_it():
    assert _PROBE not in os.environ
    if _BEFORE:  # the first test ran in this process
        assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == _BEFORE["MALLOC_TRIM_THRESHOLD_"]
