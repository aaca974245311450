-- LogBatch claims its request_id with the sha256 of what the batch writes too, so that
-- the same id with another batch is REQUEST_ID_REUSED, as for every other write, rather
-- than taken for a repeat and dropped. LogMetric's rows are then told apart by their
-- prefix ("LogMetric:"; LogBatch ids may not start so) instead of by having one, for
-- their shorter retention. Building the index reads applied_batches once, and writes
-- to it wait meanwhile: a few seconds per million rows.
CREATE INDEX applied_batches_metric_ids_by_age ON applied_batches (applied_at)
    WHERE request_id LIKE 'LogMetric:%';
DROP INDEX applied_batches_metric_applied_at;
