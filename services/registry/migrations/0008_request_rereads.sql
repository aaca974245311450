-- Whether response holds a stub of an answer larger than a request id keeps
-- (idempotency.MAX_REMEMBERED_ANSWER_BYTES): the answer with only the fields naming its
-- object, which the write's repeat reads again (idempotency.Reread).
ALTER TABLE requests ADD COLUMN reread boolean NOT NULL DEFAULT false;
