"""The restore replay plan and the certificate."""

import hashlib
import json
import tomllib
from datetime import timedelta
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from services.accounts.context import RETENTION_SUBJECT_INDEX
from services.deletion.config import DeletionSettings
from services.deletion.domain.certificate import Certificate, Finding, Verdict, digest_of
from services.deletion.domain.replay import (
    LedgerEntry,
    ReleaseEntry,
    SubjectColumns,
    load_subject_columns,
    parse_subject_columns,
    releases_to_replay,
    replay_plan,
    to_replay,
)
from shared.vault.crypto import blind_index
from tests.unit.deletion.factories import T0


def _shipped() -> SubjectColumns:
    """The subject columns the deletion service ships."""
    return load_subject_columns(DeletionSettings().deletion_subject_columns_file)


def entry(erased_after: timedelta | None, scope: str = "account") -> LedgerEntry:
    erased_at = None if erased_after is None else T0 + erased_after
    item = None if scope == "account" else uuid4()
    return LedgerEntry(uuid4(), uuid4(), scope, item, T0, erased_at)  # type: ignore[arg-type]


def test_erasures_not_finished_when_the_snapshot_was_taken_are_replayed() -> None:
    before, after, unfinished = entry(timedelta(hours=-1)), entry(timedelta(hours=1)), entry(None)
    assert to_replay([before, after, unfinished], T0) == [after, unfinished]


def test_the_plan_deletes_by_subject_or_item_columns_in_order() -> None:
    columns = parse_subject_columns('[accounts]\naccount = ["devices.user_id", "users.id"]\n'
                                    'device = ["devices.id"]\n')  # fmt: skip
    account, device = entry(None), entry(None, scope="device")
    plan = replay_plan("accounts", columns, [account, device])
    assert [(d.table, d.column, d.value) for d in plan] == [
        ("devices", "user_id", account.subject_id),
        ("users", "id", account.subject_id),
        ("devices", "id", device.item_id),
    ]
    assert plan[0].sql() == 'DELETE FROM "devices" WHERE "user_id" = $1'
    assert replay_plan("analytics", columns, [account]) == []


def test_a_request_reply_is_replayed_through_the_request_id_in_its_params() -> None:
    shipped = _shipped()
    request = entry(None, scope="request")
    plan = replay_plan("notifier", shipped, [request])
    assert [d.sql() for d in plan] == [
        'DELETE FROM "inbox_items" WHERE "notice_id" IN (SELECT "notice_id" FROM "notices"'
        """ WHERE "params"->>'request_id' = $1::text)""",
        'DELETE FROM "deliveries" WHERE "notice_id" IN (SELECT "notice_id" FROM "notices"'
        """ WHERE "params"->>'request_id' = $1::text)""",
        """DELETE FROM "notices" WHERE "params"->>'request_id' = $1::text""",
    ]
    assert {d.argument() for d in plan} == {str(request.item_id)}
    assert plan[0].tables == ("inbox_items", "notices")


def test_a_scheduled_notice_loses_the_subject_from_its_list_and_stays() -> None:
    """The notifier takes an erased subject's id out of a notice scheduled for later (its
    other recipients still get it): the replay does the same, never deletes the notice."""
    shipped = _shipped()
    account = entry(None)
    [listed] = [d for d in replay_plan("notifier", shipped, [account]) if d.table == "notices"]
    assert listed.sql() == (
        'UPDATE "notices" SET "listed" = array_remove("listed", $1::uuid)'
        ' WHERE "listed" @> ARRAY[$1::uuid]'
    )
    assert (listed.argument(), listed.tables) == (account.subject_id, ("notices",))


def test_consents_go_but_those_a_disclosure_was_made_under() -> None:
    shipped = _shipped()
    account = entry(None)
    [consents] = [d for d in replay_plan("accounts", shipped, [account]) if d.table == "consents"]
    assert consents.sql() == (
        'DELETE FROM "consents" t WHERE t."user_id" = $1 AND NOT EXISTS'
        ' (SELECT 1 FROM "disclosures" k WHERE k."user_id" = $1'
        ' AND k."recipient_id" = t."recipient_id")'
    )
    assert consents.tables == ("consents", "disclosures")  # skipped if a snapshot lacks one


@pytest.mark.parametrize(
    "entry_text",
    [
        "a.b -> notices.listed[]",
        "notices.params.x unless c.d",
        "notices.listed[] unless c.d",
        "notices.listed []",
    ],
)
def test_an_entry_of_two_kinds_at_once_is_refused(entry_text: str) -> None:
    with pytest.raises(ValueError, match=r"combines kinds|is not table\.column"):
        parse_subject_columns(f'[notifier]\naccount = ["{entry_text}"]\n')


def test_column_names_are_validated() -> None:
    with pytest.raises(ValueError, match=r"table\.column"):
        parse_subject_columns('[accounts]\naccount = ["users; DROP TABLE users"]\n')
    with pytest.raises(ValueError, match=r"table\.column"):
        parse_subject_columns('[notifier]\nrequest = ["notices.params.x\'; --"]\n')
    shipped = _shipped()
    account = shipped["accounts"]["account"]
    assert "users.id" in account
    # Invoices never cascade with their user: the replay removes them first.
    assert account.index("invoices.user_id") < account.index("users.id")


def test_a_verdict_is_clean_only_without_personal_findings_and_with_the_key_shredded() -> None:
    kept = Finding("accounts.audit_log.subject_id", 3, kept_by_rule="security_audit")
    assert Verdict((kept,), ("postgres:accounts",), shredded=True).clean
    assert not Verdict((kept,), (), shredded=False).clean
    found = Verdict((Finding("accounts.users.id", 1),), (), shredded=True)
    assert not found.clean
    assert found.summary() == "verifier found: accounts.users.id (1 rows)"


def test_the_certificate_names_the_request_only_and_its_digest_covers_it() -> None:
    # That no subject id reaches it from a real request and receipts is checked where
    # they exist: tests/integration/deletion/test_orchestrator.py.
    verdict = Verdict((), ("postgres:accounts", "kafka:accounts.contacts"), shredded=True)
    request_id = uuid4()
    certificate = Certificate(
        request_id, "account", {"requested": T0, "complete": T0 + timedelta(days=40)},
        {"accounts": {"erased": {"users": 1}}}, "v1", verdict, T0 + timedelta(days=40),
    )  # fmt: skip
    assert set(certificate.body) == {
        "request_id", "scope", "stages", "stores", "retention_version", "verified", "issued_at"
    }  # fmt: skip
    assert certificate.body["request_id"] == str(request_id)
    # SHA-256 over the canonical JSON (keys sorted, no whitespace), computed here.
    canonical = json.dumps(certificate.body, sort_keys=True, separators=(",", ":"))
    assert certificate.digest == hashlib.sha256(canonical.encode()).hexdigest()
    changes: list[dict[str, object]] = [
        {"scope": "device"}, {"stores": {}}, {"issued_at": T0.isoformat()}
    ]  # fmt: skip
    for changed in changes:
        assert digest_of({**certificate.body, **changed}) != certificate.digest


# A fixed certificate's canonical JSON, as anyone checking a copy would write it.
CANONICAL = (
    '{"issued_at":"2025-03-12T12:00:00+00:00",'
    '"request_id":"00000000-0000-4000-8000-000000000001",'
    '"retention_version":"v1","scope":"account",'
    '"stages":{"complete":"2025-03-12T12:00:00+00:00","requested":"2025-01-31T12:00:00+00:00"},'
    '"stores":{"accounts":{"erased":{"users":1}}},'
    '"verified":{"kept_anonymised":{"accounts.invoices.user_id":'
    '{"rows":2,"rule":"financial_records"}},'
    '"scanned":["postgres:accounts","kafka:accounts.contacts"],"vault_key_shredded":true}}'
)


def test_the_digest_of_a_fixed_certificate_is_the_sha256_of_its_canonical_json() -> None:
    kept = Finding("accounts.invoices.user_id", 2, kept_by_rule="financial_records")
    verdict = Verdict((kept,), ("postgres:accounts", "kafka:accounts.contacts"), shredded=True)
    certificate = Certificate(
        UUID("00000000-0000-4000-8000-000000000001"), "account",
        {"requested": T0, "complete": T0 + timedelta(days=40)},
        {"accounts": {"erased": {"users": 1}}}, "v1", verdict, T0 + timedelta(days=40),
    )  # fmt: skip
    assert json.loads(CANONICAL) == certificate.body
    assert certificate.digest == hashlib.sha256(CANONICAL.encode()).hexdigest()
    assert certificate.digest == "7b7b4f1c3699ed11f93d6797e6801538caad9e150f148fa12d3509a92a044726"


def test_releases_not_answered_when_the_snapshot_was_taken_are_replayed() -> None:
    subject = uuid4()
    answered_before = ReleaseEntry(subject, "disclosure_log", T0 - timedelta(hours=1))
    answered_after = ReleaseEntry(subject, "disclosure_log", T0 + timedelta(hours=1))
    unanswered = ReleaseEntry(subject, "financial_records", None)
    assert releases_to_replay([answered_before, answered_after, unanswered], T0) == [
        answered_after,
        unanswered,
    ]


def test_a_released_invoice_is_found_by_the_blind_index_accounts_keeps_its_key_under() -> None:
    shipped = _shipped()
    subject, key = uuid4(), b"k" * 32
    release = ReleaseEntry(subject, "financial_records", None)
    children, keys = replay_plan("accounts", shipped, [], [release], key)
    # The purpose accounts indexes retention keys under: the same hash, or none is found.
    index = blind_index(key, RETENTION_SUBJECT_INDEX, str(subject))
    assert children.sql() == (
        'DELETE FROM "invoices" WHERE "retention_key" IN'
        ' (SELECT "retention_key" FROM "retention_keys" WHERE "subject_index" = $1)'
    )
    assert (children.argument(), keys.argument()) == (index, index)
    assert keys.sql() == 'DELETE FROM "retention_keys" WHERE "subject_index" = $1'
    with pytest.raises(ValueError, match="blind-index key"):
        replay_plan("accounts", shipped, [], [release])
    # Other databases keep nothing of that category; an erasure's plan is unchanged.
    assert replay_plan("notifier", shipped, [], [release], key) == []


def test_every_category_a_release_erases_live_is_replayed_where_it_is_kept() -> None:
    """retention.toml names where each kept category lives; the replay config must
    release each of those tables (those whose rows are ids, keyed hashes aside)."""
    shipped = _shipped()
    rules = tomllib.loads(Path(DeletionSettings().deletion_retention_file).read_text())["rule"]
    for rule in rules:
        for place in (*rule.get("tables", ()), *rule.get("anonymised_tables", ())):
            database, table = place.split(".")
            if rule["category"] in ("security_audit", "fraud_abuse", "suppression_list"):
                continue  # an append-only hash chain, and rows keyed by an address's hash
            entries = shipped[database][f"release:{rule['category']}"]
            assert any(e.split(" -> ")[-1].startswith(f"{table}.") or
                       e.startswith(f"{table}.") for e in entries), place  # fmt: skip


def test_what_the_live_erasure_keeps_until_a_release_is_replayed_with_that_release() -> None:
    """Recipients told of an erasure are its proof, kept until the disclosure log's
    release: a restore before that release keeps them, as live."""
    shipped = _shipped()
    assert "recipient_erasures.subject_id" not in shipped["accounts"]["account"]
    assert "recipient_erasures.subject_id" in shipped["accounts"]["release:disclosure_log"]
