-- LogBatch request ids are pruned by age (CAIRN_BATCH_ID_RETENTION_SECONDS).
CREATE INDEX applied_batches_applied_at ON applied_batches (applied_at);
