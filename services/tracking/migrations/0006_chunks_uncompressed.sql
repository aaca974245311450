-- History chunks are stored without compression. A chunk's arrays pass PostgreSQL's
-- 2 kB threshold from about 60 points on, and compressing them (pglz) cost more than
-- everything else of a write: COPY of a batch of 1,000 points of 10 keys took 2.7 ms
-- compressed, 0.85 ms stored as they are (one key of 1,000 points: 6.0 and 1.0 ms),
-- and reads were no faster. The price is disk: steps and timestamps that count up
-- compress well, so such chunks take about 1.6 times the space (values hardly
-- compress). Rows written before stay as they are; only new rows change.
ALTER TABLE metric_chunks
    ALTER COLUMN steps SET STORAGE EXTERNAL,
    ALTER COLUMN "values" SET STORAGE EXTERNAL,
    ALTER COLUMN timestamps_ms SET STORAGE EXTERNAL;
