-- How many attempts at an operation an outage cut short (the database or the object
-- store out of reach, or a server that died and never handed it back): each rests
-- longer before the next, and the tenth fails it. Takeovers of operations a stopping
-- server handed back count in attempts only.
ALTER TABLE operations ADD COLUMN outages integer NOT NULL DEFAULT 0;
