-- History chunks of up to about 8 kB stay in their row instead of moving to the TOAST
-- table once a row passes 2 kB (about 60 points): a 1,000-point batch of 10 keys wrote
-- twenty TOAST rows and their index entries besides its ten chunks. Measured with the
-- store's own SQL (BEGIN, statement, COPY, COMMIT) against PostgreSQL on the 2-core
-- development machine: 8 writers 923k -> 1,193k points/s, PostgreSQL's CPU 1.19 ->
-- 0.69 ms a batch; 1 writer 600k -> 636k. Larger chunks are still stored out of line,
-- uncompressed (0006). Rows written before stay as they are; only new rows change.
ALTER TABLE metric_chunks SET (toast_tuple_target = 8160);
