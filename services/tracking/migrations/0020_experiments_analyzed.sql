-- Autovacuum analyzes a table once 50 of its rows changed (and a tenth of them): a
-- deployment's experiments, a few dozen rows that creating runs does not touch, could
-- go unanalyzed for good. PostgreSQL then guessed hundreds of experiments, a few of
-- them active, and expected a search's join of runs to their experiment to keep a
-- run in 250: it looked up the filter's values one run at a time for every run of the
-- experiment (340 ms to sort 100,000 runs, 80 once the table is analyzed). From the
-- first change on, autovacuum now analyzes the table at its next round (a minute by
-- default), which costs milliseconds for a table this size.
ALTER TABLE experiments SET (autovacuum_analyze_threshold = 0);
