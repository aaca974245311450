-- Autovacuum analyzes a table once more than 50 of its rows changed, and a tenth of
-- them: a deployment's experiments, a few dozen rows that creating runs does not touch,
-- could go unanalyzed for good. PostgreSQL then guessed hundreds of experiments, a few
-- of them active, and expected a search's join of runs to their experiment to keep a
-- run in 250: it looked up the filter's values one run at a time for every run of the
-- experiment (`tags.team = 'vision' and params.optimizer = 'adam'` by `params.model`
-- over 100,000 runs: 340 ms, 80 once the table is analyzed). Without the 50, autovacuum
-- analyzes the table from its first change on (at its next round, a minute by default),
-- then once a tenth of its rows changed, milliseconds each for a table this size.
ALTER TABLE experiments SET (autovacuum_analyze_threshold = 0);
