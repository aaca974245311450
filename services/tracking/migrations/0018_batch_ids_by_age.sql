-- LogBatch's request ids (the rows without a fingerprint) by age, as 0007 indexes
-- LogMetric's: each kind is forgotten after a retention of its own. With LogBatch's the
-- shorter, the prune of its oldest ids walked the index of every row by age (0003) and
-- passed over each LogMetric id between the two cutoffs, row by row, at every slice of
-- 10,000. Nothing else reads that index, so it goes.
CREATE INDEX applied_batches_batch_applied_at ON applied_batches (applied_at)
    WHERE fingerprint IS NULL;
DROP INDEX applied_batches_applied_at;
