"""PostgreSQL stops, crashes and fills up under reads and writes: the app answers 503 with
the JSON body and Retry-After, never 500, loses no acknowledged write, and recovers."""

import pytest

from bench.faults import FAULTS, fault_run

pytestmark = pytest.mark.slow  # starts processes: pipenv run test-all


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_database_faults_give_503_never_500_and_lose_no_write(base_settings, fault):
    summary = await fault_run(fault, base_settings)
    assert summary["500"] == 0, summary["bad_examples"]
    assert summary["other_bad"] == 0, summary["bad_examples"]
    assert summary["writes_lost"] == 0, summary
    assert summary["503"] > 0, f"the fault was never felt: {summary}"
    assert summary["writes_acknowledged"] > 0, summary
    assert summary["recovery_s"] is not None
