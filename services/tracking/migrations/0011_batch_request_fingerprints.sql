-- LogBatch claims its request_id with the sha256 of what the batch writes, so that the
-- same id with another batch is REQUEST_ID_REUSED, as for every other write, rather
-- than taken for a repeat and dropped. It has a column of its own: servers of the
-- version before, still running during an update or after a rollback, tell LogMetric's
-- ids (forgotten after an hour) by their having a `fingerprint`, and would forget
-- LogBatch's with them. A nullable column without a default: no row is rewritten.
ALTER TABLE applied_batches ADD COLUMN batch_fingerprint bytea;
