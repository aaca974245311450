-- Experiments, runs and everything logged to them. Every row belongs to a project.
-- Lifecycle stages and run statuses use the numbers of the cairn.tracking.v1 enums.

CREATE TABLE experiments (
    experiment_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project text NOT NULL,
    name text NOT NULL,
    artifact_location text NOT NULL,
    lifecycle_stage smallint NOT NULL DEFAULT 1,
    creation_time timestamptz NOT NULL DEFAULT now(),
    last_update_time timestamptz NOT NULL DEFAULT now(),
    -- Names stay unique per project even while an experiment is deleted (as in MLflow).
    UNIQUE (project, name)
);

CREATE TABLE experiment_tags (
    experiment_id bigint NOT NULL REFERENCES experiments ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE runs (
    run_id uuid PRIMARY KEY,
    project text NOT NULL,
    experiment_id bigint NOT NULL REFERENCES experiments,
    run_name text NOT NULL,
    user_id text NOT NULL DEFAULT '',
    status smallint NOT NULL,
    start_time bigint NOT NULL,
    end_time bigint,
    artifact_uri text NOT NULL,
    lifecycle_stage smallint NOT NULL DEFAULT 1,
    parent_run_id uuid
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, start_time DESC, run_id);

CREATE TABLE params (
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX params_by_key ON params (key, value);

CREATE TABLE tags (
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    key text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX tags_by_key ON tags (key, value);

-- Every metric point ever logged: the history, stored as chunks of columns. One
-- LogBatch adds one chunk per metric key, its points sorted by (step, timestamp), so
-- ingestion writes a few rows instead of one row (and one index entry) per point.
CREATE TABLE metric_chunks (
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    key text NOT NULL,
    chunk_id bigint GENERATED ALWAYS AS IDENTITY,
    min_step bigint NOT NULL,
    max_step bigint NOT NULL,
    steps bigint[] NOT NULL,
    "values" double precision[] NOT NULL,
    timestamps_ms bigint[] NOT NULL,
    PRIMARY KEY (run_id, key, chunk_id)
);

-- The latest point per (run, key): greatest step, then timestamp, then value.
CREATE TABLE latest_metrics (
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    key text NOT NULL,
    value double precision NOT NULL,
    step bigint NOT NULL,
    timestamp_ms bigint NOT NULL,
    PRIMARY KEY (run_id, key)
);
-- Serves metric filters and walking runs in the order of one metric.
CREATE INDEX latest_metrics_by_key ON latest_metrics (key, value, run_id);

CREATE TABLE run_inputs (
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    kind text NOT NULL,
    name text NOT NULL,
    uri text NOT NULL,
    digest text NOT NULL,
    context text NOT NULL,
    PRIMARY KEY (run_id, kind, uri, context)
);

-- Request ids of applied LogBatch calls, so that a retried batch is applied once.
CREATE TABLE applied_batches (
    run_id uuid NOT NULL REFERENCES runs ON DELETE CASCADE,
    request_id text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, request_id)
);
