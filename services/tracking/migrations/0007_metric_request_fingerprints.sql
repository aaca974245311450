-- LogMetric claims its call's request id in applied_batches (prefixed "LogMetric:"),
-- with the sha256 of the request, as the interceptor keeps it in requests: the same id
-- with another request is REQUEST_ID_REUSED. Only LogMetric's rows carry one, and they
-- are forgotten after CAIRN_REQUEST_ID_RETENTION_SECONDS, LogBatch's after the longer
-- CAIRN_BATCH_ID_RETENTION_SECONDS: the partial index finds the old ones among a month
-- of LogBatch ids. (LogMetric rows claimed before this migration have none; they are
-- forgotten with LogBatch's.)
ALTER TABLE applied_batches ADD COLUMN fingerprint bytea;
CREATE INDEX applied_batches_metric_applied_at ON applied_batches (applied_at)
    WHERE fingerprint IS NOT NULL;
