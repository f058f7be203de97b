-- A dead letter in doubt: handed to the SMTP server, its answer never recorded (the
-- server may have the message). A bulk replay leaves these out: each is replayed by
-- its id, once the mail server's log shows its Message-ID never arrived.
ALTER TABLE deliveries ADD COLUMN in_doubt boolean NOT NULL DEFAULT false;
CREATE INDEX deliveries_in_doubt ON deliveries (finished_at) WHERE in_doubt;
