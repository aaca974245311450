-- When a garbage collection began removing a deleted experiment's runs for good (NULL
-- until then): from then on the experiment cannot be restored, it goes next.
ALTER TABLE experiments ADD COLUMN purge_time timestamptz;
