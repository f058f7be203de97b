-- Repair invoices: financial records kept for their legal period (P-13). Card data never
-- reaches iMT (the payment provider takes it): the provider's reference is kept instead.
--
-- On erasure an invoice is anonymised, not deleted: the user link is replaced by a random
-- retention key (shared by that subject's invoices, derivable from nothing), the personal
-- text is dropped; number, amount, currency, issue date and references stay until the
-- deletion service's release erases them. No timestamp of the recording or of the
-- anonymisation is kept: either would match the audit log or the deletion ledger.
CREATE TABLE invoices (
    id                 uuid PRIMARY KEY,
    user_id            uuid REFERENCES users,       -- NULL once anonymised; never cascades
    retention_key      uuid,                        -- set when anonymised
    number             text NOT NULL UNIQUE,
    amount             numeric(16, 4) NOT NULL CHECK (amount > 0),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    issued_on          date NOT NULL,
    repair_reference   text NOT NULL,
    payment_provider   text NOT NULL,
    provider_reference text NOT NULL,
    description        bytea,                       -- sealed; dropped when anonymised
    CHECK ((user_id IS NULL) = (retention_key IS NOT NULL)),
    CHECK (user_id IS NOT NULL OR description IS NULL)
);
CREATE INDEX invoices_user ON invoices (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX invoices_retention_key ON invoices (retention_key) WHERE retention_key IS NOT NULL;

-- The retention key of an erased subject's kept records, found again only for the
-- release, by a keyed hash of the subject id (vault blind index): no id is stored.
-- The row goes with the records it points to.
CREATE TABLE retention_keys (
    subject_index bytea NOT NULL,
    category      text NOT NULL,
    retention_key uuid NOT NULL UNIQUE,
    PRIMARY KEY (subject_index, category)
);
