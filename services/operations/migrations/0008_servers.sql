-- The servers that run operations, each written again every few seconds while it
-- reaches the database (runner.py): an operation is failed as abandoned only when no
-- server hosting its steps was seen for 10 minutes, by a server that itself reached
-- the database all that time, so an outage of the database never fails one.
CREATE TABLE servers (
    server_id uuid PRIMARY KEY,
    -- The steps it runs (runner.Runner.steps): it can take over operations of these.
    steps text[] NOT NULL,
    -- When its current unbroken run of passes began: a gap (an outage) starts another.
    up_since timestamptz NOT NULL DEFAULT clock_timestamp(),
    seen_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
