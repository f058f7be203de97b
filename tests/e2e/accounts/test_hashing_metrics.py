"""Operators see the password hashing pool's load on the accounts API's /metrics."""

import httpx

from deploy.local import gateway
from tests.e2e.accounts.support import API, sign_up, unique_email
from tests.support.platform import metric_samples

SUMMARIES = ("password_hash_wait_seconds", "password_hash_seconds")
SERIES = ("password_hashes_waiting", *(f"{s}_{p}" for s in SUMMARIES for p in ("count", "sum")))


async def _hashing(metrics: httpx.AsyncClient) -> dict[str, float]:
    samples = metric_samples((await metrics.get("/metrics")).text)
    return {name: samples[name] for name in SERIES}


async def test_a_sign_up_and_a_failed_login_each_count_one_hash_with_its_wait_and_time(
    client: httpx.AsyncClient,
) -> None:
    async with httpx.AsyncClient(
        base_url=f"http://{gateway.UPSTREAMS['accounts']}", timeout=10
    ) as metrics:
        before = await _hashing(metrics)
        await sign_up(client)  # hashes the new password
        unknown = await client.post(  # verifies against the dummy hash, to take as long
            f"{API}/sessions", json={"email": unique_email(), "password": "not-a-password-1"}
        )
        assert unknown.status_code == 401, unknown.text
        after = await _hashing(metrics)
    for summary in SUMMARIES:
        assert after[f"{summary}_count"] - before[f"{summary}_count"] >= 2, (summary, after)
        assert after[f"{summary}_sum"] >= before[f"{summary}_sum"]
    # An argon2id hash at m=19 MiB, t=2 takes milliseconds at the very least.
    hashing = after["password_hash_seconds_sum"] - before["password_hash_seconds_sum"]
    assert hashing >= 2 * 0.002, after
    assert after["password_hashes_waiting"] == 0  # none is left waiting once answered
