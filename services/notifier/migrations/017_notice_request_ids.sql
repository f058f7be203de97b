-- The request a notice is about (an operator's reply: params.request_id), as a column of
-- its own: the deletion service's verifier looks for an erased request's id in every
-- uuid column, and would not see it inside the params. NULL when the params hold none,
-- or not a uuid.
ALTER TABLE notices ADD COLUMN request_id uuid GENERATED ALWAYS AS (
    CASE WHEN params->>'request_id'
              ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
         THEN (params->>'request_id')::uuid END
) STORED;
CREATE INDEX notices_request ON notices (request_id) WHERE request_id IS NOT NULL;
