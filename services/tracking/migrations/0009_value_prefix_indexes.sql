-- A (key, value) index entry holds the whole value, and PostgreSQL refuses an entry
-- past 2,704 bytes: a param of 6,000 or a tag of 8,000 characters, both accepted, failed
-- to be stored once it did not compress that small (a config dump, say). The indexes now
-- hold each value's first 200 characters (at most 800 bytes, beside a key of at most
-- 250 characters): a search comparing a value compares that prefix too
-- (run_filters.VALUE_PREFIX), which the index serves, then the whole value.
--
-- The new indexes are built before the old ones are dropped: a build blocks writes to
-- its table but not reads, while DROP INDEX takes a lock that blocks reads too, held to
-- the end of the migration's transaction; so it comes last, after both builds.
CREATE INDEX params_by_key_prefix ON params (key, left(value, 200));
CREATE INDEX tags_by_key_prefix ON tags (key, left(value, 200));
DROP INDEX params_by_key;
DROP INDEX tags_by_key;
ALTER INDEX params_by_key_prefix RENAME TO params_by_key;
ALTER INDEX tags_by_key_prefix RENAME TO tags_by_key;
