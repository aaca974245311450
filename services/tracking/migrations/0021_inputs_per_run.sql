-- PostgreSQL plans a lookup of one run's inputs (a filter on inputs tested run by run,
-- a page's budget counting each run's entries) by the rows a run holds on average:
-- the table's rows over the runs ANALYZE finds in it. Most runs often hold no inputs,
-- so one run of 100,000 inputs among them made that average all of the table, and
-- each lookup read the whole table, or a whole index of another column, once for each
-- run it tested (4.1 million rows for a filter walking 41 runs). Fixed at a hundred
-- inputs a run: a run holding far more is one of ANALYZE's most common values, counted
-- for itself. The other tables of a run's entries keep their counts: most runs hold
-- some of each, and how many runs hold a metric is what orders a search by it.
ALTER TABLE run_inputs ALTER COLUMN run_id SET (n_distinct = -0.01);
-- The setting counts from the table's next ANALYZE on: a sample of 30,000 rows at most.
ANALYZE run_inputs;
