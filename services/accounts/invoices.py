"""Repair invoices: recorded by operators, shown to their user, anonymised on erasure.

The erasure keeps them for the ``financial_records`` retention category: the user link
becomes a random retention key and the personal text goes; the deletion service's
release, when the period ends, erases them (:func:`anonymise_invoices`,
:func:`erase_invoices`). The period counts from each invoice's issue date: one whose
period has already ended is erased with the account, not kept (:func:`erase_spent_invoices`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from uuid import UUID, uuid4

from pydantic import BaseModel, Field

from services.accounts.context import (
    INVOICE_DESCRIPTION,
    RETENTION_SUBJECT_INDEX,
    refuse_card_numbers,
)
from services.accounts.domain.invoices import (
    FINANCIAL_RECORDS,
    MINOR_UNITS,
    amount_problem,
    issue_date_problem,
    last_spent_issue,
    needed_until,
)
from services.accounts.store import Row
from shared.db.pool import Connection
from shared.observability import Problem
from shared.vault import Vault

# Business references: no spaces, so no names or sentences slip into a kept column.
REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,63}$"


class InvoiceIn(BaseModel):
    number: str = Field(pattern=REFERENCE, description="The invoice number, unique.")
    amount: Decimal = Field(gt=0, max_digits=16, decimal_places=4)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.")
    issued_on: date | None = Field(None, description="Issue date (default: today, UTC).")
    repair_reference: str = Field(pattern=REFERENCE, description="The repair or device job.")
    payment_provider: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,39}$")
    provider_reference: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$",
        description="The provider's payment id; never card data.",
    )
    description: str | None = Field(
        None, min_length=1, max_length=500, description="Personal text: dropped on erasure."
    )

    def checked(self, today: date) -> date:
        """Refuse card numbers and invalid amounts or dates; the issue date to store."""
        refuse_card_numbers(
            number=self.number,
            repair_reference=self.repair_reference,
            payment_provider=self.payment_provider,
            provider_reference=self.provider_reference,
            description=self.description,
        )
        issued_on = self.issued_on or today
        problem = amount_problem(self.amount, self.currency) or issue_date_problem(issued_on, today)
        if problem:
            raise Problem(422, "Invalid invoice", f"Refused: {problem}.", slug="validation")
        return issued_on


class Invoice(BaseModel):
    id: UUID
    number: str
    amount: Decimal
    currency: str
    issued_on: date
    repair_reference: str
    payment_provider: str
    provider_reference: str
    description: str | None


async def new_invoice_columns(vault: Vault, user_id: UUID, body: InvoiceIn) -> dict[str, object]:
    issued_on = body.checked(datetime.now(UTC).date())
    description = body.description
    return {
        "id": uuid4(),
        "user_id": user_id,
        "number": body.number,
        "amount": body.amount,
        "currency": body.currency,
        "issued_on": issued_on,
        "repair_reference": body.repair_reference,
        "payment_provider": body.payment_provider,
        "provider_reference": body.provider_reference,
        "description": (
            await vault.seal(user_id, description, purpose=INVOICE_DESCRIPTION)
            if description
            else None
        ),
    }


async def invoice_out(vault: Vault, row: Row) -> Invoice:
    uid, sealed = row["user_id"], row["description"]
    return Invoice(
        id=row["id"],
        number=row["number"],
        amount=row["amount"].quantize(Decimal(1).scaleb(-MINOR_UNITS[row["currency"]])),
        currency=row["currency"],
        issued_on=row["issued_on"],
        repair_reference=row["repair_reference"],
        payment_provider=row["payment_provider"],
        provider_reference=row["provider_reference"],
        description=(
            await vault.open(uid, sealed, purpose=INVOICE_DESCRIPTION) if sealed else None
        ),
    )


# -- erasure ----------------------------------------------------------------------------


def _subject_index(vault: Vault, subject: UUID) -> bytes:
    return vault.blind_index(str(subject), purpose=RETENTION_SUBJECT_INDEX)


async def erase_spent_invoices(conn: Connection, subject: UUID) -> int:
    """Erase the subject's invoices (still linked) whose period ended: how many went.

    Only at the erasure, while they are linked: a legal hold placed afterwards keeps what
    was anonymised, and only the deletion service, which knows of holds, releases it.
    """
    spent = last_spent_issue(datetime.now(UTC).date())
    status = await conn.execute(
        "DELETE FROM invoices WHERE user_id = $1 AND issued_on <= $2", subject, spent
    )
    return int(status.split()[-1])


async def anonymise_invoices(conn: Connection, vault: Vault, subject: UUID) -> int:
    """Keep the subject's invoices without them: returns how many are kept (idempotent).

    Every invoice of the subject gets the same random retention key, kept with a keyed
    hash of the subject id so that the release finds them; the personal text goes.
    """
    index = _subject_index(vault, subject)
    key = await conn.fetchval(
        "SELECT retention_key FROM retention_keys WHERE subject_index = $1 AND category = $2",
        index,
        FINANCIAL_RECORDS,
    )
    linked = int(await conn.fetchval("SELECT count(*) FROM invoices WHERE user_id = $1", subject))
    if linked and key is None:
        key = uuid4()
        await conn.execute(
            "INSERT INTO retention_keys (subject_index, category, retention_key)"
            " VALUES ($1, $2, $3)",
            index,
            FINANCIAL_RECORDS,
            key,
        )
    if linked:
        await conn.execute(
            "UPDATE invoices SET user_id = NULL, retention_key = $2, description = NULL"
            " WHERE user_id = $1",
            subject,
            key,
        )
    if key is None:
        return 0
    return int(await conn.fetchval("SELECT count(*) FROM invoices WHERE retention_key = $1", key))


async def kept_invoices_until(conn: Connection, vault: Vault, subject: UUID) -> date | None:
    """The day the last of the subject's kept invoices is no longer needed (each counts
    its period from its issue), or None when none is kept."""
    latest: date | None = await conn.fetchval(
        "SELECT max(i.issued_on) FROM invoices i JOIN retention_keys k"
        " ON k.retention_key = i.retention_key"
        " WHERE k.subject_index = $1 AND k.category = $2",
        _subject_index(vault, subject),
        FINANCIAL_RECORDS,
    )
    return needed_until(latest) if latest is not None else None


async def erase_invoices(conn: Connection, vault: Vault, subject: UUID) -> int:
    """Erase the subject's invoices, linked or kept anonymised (the release); idempotent."""
    key = await conn.fetchval(
        "DELETE FROM retention_keys WHERE subject_index = $1 AND category = $2"
        " RETURNING retention_key",
        _subject_index(vault, subject),
        FINANCIAL_RECORDS,
    )
    status = await conn.execute(
        "DELETE FROM invoices WHERE user_id = $1 OR retention_key = $2", subject, key
    )
    return int(status.split()[-1])
