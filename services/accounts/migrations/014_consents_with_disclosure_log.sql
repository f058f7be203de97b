-- A disclosure is proof only with the consent it was made under (P-18): an erasure keeps
-- the consent records of the recipients the subject's data was disclosed to, with the
-- disclosure log (ids, purpose, grant or withdrawal and its time; nothing else of the
-- subject), and the release of that log deletes them. So they no longer go with the user
-- row; the erasure deletes the others itself. A consent is only ever recorded with the
-- user's row locked, which an erasure deletes under the same lock.
ALTER TABLE consents DROP CONSTRAINT consents_user_id_fkey;
