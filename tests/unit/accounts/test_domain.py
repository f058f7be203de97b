"""Accounts' pure rules: age bands, throttling, content, field classification, roles."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.accounts.domain import throttle
from services.accounts.domain.age import (
    age_band,
    earliest_today,
    latest_today,
    plausible_birth_date,
)
from services.accounts.domain.content import DAMAGE_STATES, catalogue, content_for, generic
from services.accounts.domain.fields import DISCLOSABLE_FIELDS, disclosed, is_sensitive, refused_for
from services.accounts.domain.roles import ANALYST, PERMISSIONS

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("birth", "band"),
    [
        (None, "unknown"),
        (date(2013, 11, 30), "under_13"),  # turns 13 tomorrow
        (date(2013, 11, 29), "13_to_17"),  # 13 today
        (date(2008, 11, 30), "13_to_17"),
        (date(2008, 11, 29), "adult"),
    ],
)
def test_age_bands_turn_on_the_birthday(birth: date | None, band: str) -> None:
    assert age_band(birth, NOW.date()) == band


@pytest.mark.parametrize(
    ("now", "earliest", "latest"),
    [
        (datetime(2027, 3, 15, 6, 0, tzinfo=UTC), date(2027, 3, 14), date(2027, 3, 15)),
        (datetime(2027, 3, 15, 11, 59, tzinfo=UTC), date(2027, 3, 14), date(2027, 3, 16)),
        (datetime(2027, 3, 15, 12, 0, tzinfo=UTC), date(2027, 3, 15), date(2027, 3, 16)),
        # The same instant written with an operator's or a client's offset.
        (datetime(2027, 3, 14, 20, 0, tzinfo=timezone(timedelta(hours=-10))),
         date(2027, 3, 14), date(2027, 3, 15)),
    ],
)  # fmt: skip
def test_today_begins_at_utc_plus_14_and_ends_at_utc_minus_12(
    now: datetime, earliest: date, latest: date
) -> None:
    assert (earliest_today(now), latest_today(now)) == (earliest, latest)


@pytest.mark.promise("P-26")
async def test_a_child_is_13_only_once_their_birthday_began_everywhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20:00 on 14 March in Honolulu is 06:00 on the 15th in UTC: a child born on 15
    March 2014 is 12 where they live, and needs their guardian's consent."""
    from services.accounts.routes import auth
    from shared.observability import Problem, problem_type

    monkeypatch.setattr(auth, "_now", lambda: datetime(2027, 3, 15, 6, 0, tzinfo=UTC))
    child = auth.SignUp(
        name="Kid", email="kid@example.com", password="a long passphrase",
        birth_date=date(2014, 3, 15),
    )  # fmt: skip
    with pytest.raises(Problem) as refused:
        await auth.sign_up(child, ctx=None)  # type: ignore[arg-type]  # refused before any use
    assert refused.value.type == problem_type("guardian-required")


def test_birth_dates_in_the_future_or_too_old_are_implausible() -> None:
    assert not plausible_birth_date(date(2027, 1, 1), NOW.date())
    assert not plausible_birth_date(date(1890, 1, 1), NOW.date())
    assert plausible_birth_date(date(1990, 1, 1), NOW.date())


ACCOUNT = throttle.ThrottlePolicy(free_failures=5, base_seconds=1, max_seconds=900)


def _fail(policy: throttle.ThrottlePolicy, times: int) -> throttle.Counter | None:
    counter = None
    for _ in range(times):
        counter = throttle.after_failure(policy, counter, NOW)
    return counter


def test_a_few_failures_are_free_then_the_wait_doubles_up_to_a_cap() -> None:
    assert throttle.check(ACCOUNT, _fail(ACCOUNT, 4), NOW).allowed
    delays = [throttle.delay_after(ACCOUNT, n) for n in range(1, 20)]
    assert delays[:4] == [0, 0, 0, 0]
    assert delays[4:9] == [1, 2, 4, 8, 16]
    assert max(delays) == 900
    blocked = throttle.check(ACCOUNT, _fail(ACCOUNT, 6), NOW)
    assert not blocked.allowed
    assert blocked.retry_after == 2
    assert throttle.check(ACCOUNT, _fail(ACCOUNT, 6), NOW + timedelta(seconds=2)).allowed


def test_an_account_locks_at_the_nist_bound_and_stays_locked() -> None:
    counter = _fail(ACCOUNT, 100)
    assert counter is not None
    assert counter.locked
    verdict = throttle.check(ACCOUNT, counter, NOW + timedelta(days=30))
    assert not verdict.allowed
    assert verdict.locked
    assert not _fail(ACCOUNT, 99).locked  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="100"):
        throttle.ThrottlePolicy(lockout_failures=101)


def test_an_operator_lock_lifts_after_an_hour_and_each_later_failure_locks_again() -> None:
    operators = throttle.for_operators(ACCOUNT)
    assert (operators.free_failures, operators.lockout_failures) == (5, 100)  # same bound
    counter = _fail(operators, 100)
    assert counter is not None
    assert counter.locked
    locked = throttle.check(operators, counter, NOW + timedelta(minutes=59))
    assert (locked.allowed, locked.locked, locked.retry_after) == (False, True, 60)
    # Lifted after the hour: one attempt; its failure locks the identity another hour.
    later = NOW + throttle.OPERATOR_LOCK
    assert throttle.check(operators, counter, later).allowed
    again = throttle.after_failure(operators, counter, later)
    assert again.locked
    assert not throttle.check(operators, again, later + timedelta(minutes=59)).allowed
    assert throttle.check(operators, again, later + throttle.OPERATOR_LOCK).allowed
    # Users keep the lock that only a password reset lifts.
    assert not throttle.check(ACCOUNT, counter, NOW + timedelta(days=30)).allowed
    with pytest.raises(ValueError, match="some time"):
        throttle.ThrottlePolicy(lock_for=timedelta(0))


def test_a_client_address_is_never_locked_and_its_count_restarts_after_a_quiet_window() -> None:
    client = throttle.ThrottlePolicy(
        free_failures=50, lockout_failures=None, window=timedelta(minutes=15)
    )
    counter = _fail(client, 500)
    assert counter is not None
    assert not counter.locked
    assert not throttle.check(client, counter, NOW).allowed
    later = NOW + timedelta(minutes=16)
    assert throttle.check(client, counter, later).allowed
    assert throttle.after_failure(client, counter, later).failures == 1


def test_every_damage_state_has_content_and_personalisation_off_gives_the_generic_list() -> None:
    assert set(catalogue()["by_damage_state"]) == set(DAMAGE_STATES)
    assert content_for(["water", "battery", "water"], True) == (
        catalogue()["by_damage_state"]["water"] + catalogue()["by_damage_state"]["battery"]
    )
    assert content_for(["water"], False) == generic()
    assert content_for([], True) == generic()


def test_processors_never_get_sensitive_fields_even_if_registered_for_them() -> None:
    assert refused_for("processor", ["email", "age_band", "requests"]) == ["age_band", "requests"]
    assert refused_for("partner", ["age_band"]) == []
    record = {field: f"value of {field}" for field in DISCLOSABLE_FIELDS}
    given = disclosed("processor", list(DISCLOSABLE_FIELDS), record)
    assert given
    assert not any(is_sensitive(f) for f in given)
    assert is_sensitive("a field nobody classified")  # unknown means sensitive


@pytest.mark.promise("P-19")
@pytest.mark.parametrize("kind", ["processor", "partner"])
def test_every_record_names_its_user_whatever_fields_the_recipient_was_registered_for(
    kind: str,
) -> None:
    """Erasures forwarded to a recipient name the subject by user_id alone: a record
    without it could never be matched there."""
    record = {field: f"value of {field}" for field in DISCLOSABLE_FIELDS}
    given = disclosed(kind, ["email", "name", "device_models"], record)
    assert given == {
        "user_id": "value of user_id",
        "email": "value of email",
        "name": "value of name",
        "device_models": "value of device_models",
    }
    assert list(disclosed(kind, ["email", "user_id"], record)) == ["user_id", "email"]


def test_analysts_only_reach_aggregates() -> None:
    analyst_can = {name for name, roles in PERMISSIONS.items() if ANALYST in roles}
    assert analyst_can == {"stats.read"}


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),  # the same subscriber's other address
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client on a dual-stack socket
        ("unknown", "unknown"),
    ],
)
def test_the_per_client_login_count_takes_an_ipv6_client_by_its_64(host: str, key: str) -> None:
    assert throttle.client_key(host) == key
