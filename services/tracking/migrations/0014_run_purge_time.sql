-- When a garbage collection began removing a deleted run for good (NULL until then).
-- Its history goes in many short transactions, so from then on the run cannot be
-- restored (it would come back with part of it), and any later collection finishes it.
ALTER TABLE runs ADD COLUMN purge_time timestamptz;
