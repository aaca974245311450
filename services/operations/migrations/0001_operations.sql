-- Long-running operations, shared by every server (docs/operations.md). State and kind
-- numbers are those of the cairn.operations.v1 enums.
CREATE TABLE operations (
    operation_id uuid PRIMARY KEY,
    kind smallint NOT NULL,
    state smallint NOT NULL,
    -- What the operation was asked to do, e.g. {"older_than_seconds": 2592000}.
    spec jsonb NOT NULL,
    -- The services whose steps it runs (those hosted by the server that received it);
    -- only a server hosting all of them may take it over.
    steps text[] NOT NULL,
    progress_done bigint NOT NULL DEFAULT 0,
    progress_total bigint NOT NULL DEFAULT 0,
    counts jsonb NOT NULL DEFAULT '{}',
    errors text[] NOT NULL DEFAULT '{}',
    -- The server running it and until when; renewed while it runs. An operation not
    -- done whose lease has passed is taken over by another server.
    owner uuid,
    -- How many times a server began running it (more than 1 after a takeover).
    attempts integer NOT NULL DEFAULT 0,
    lease_until timestamptz NOT NULL DEFAULT clock_timestamp(),
    create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    update_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    end_time timestamptz
);
CREATE INDEX operations_by_create_time ON operations (create_time DESC, operation_id DESC);
CREATE INDEX operations_unfinished ON operations (lease_until) WHERE end_time IS NULL;

-- Artifact locations whose objects are to be deleted: queued in the transaction that
-- removed the rows referring to them, drained by the artifacts service wherever it runs.
CREATE TABLE discarded_locations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project text NOT NULL,
    -- A directory in the artifact service; everything under it goes.
    path text NOT NULL,
    queue_time timestamptz NOT NULL DEFAULT clock_timestamp()
);
