-- How many attempts at an operation an outage cut short (the database or the object
-- store out of reach): each rests longer before the next, and the tenth fails it.
-- Takeovers after a server stopped count in attempts only.
ALTER TABLE operations ADD COLUMN outages integer NOT NULL DEFAULT 0;
