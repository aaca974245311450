-- Writes already applied, by the request id their client sent (x-cairn-request-id), with
-- the answer given: a retried StartGarbageCollection gets the operation it started
-- instead of starting another (docs/architecture.md, "Exactly-once writes"). Pruned
-- after CAIRN_REQUEST_ID_RETENTION_SECONDS.
CREATE TABLE requests (
    method text NOT NULL,
    request_id text NOT NULL,
    -- sha256 of the request: the same id with another request is refused.
    fingerprint bytea NOT NULL,
    response bytea,
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (method, request_id)
);
CREATE INDEX requests_create_time ON requests (create_time);
