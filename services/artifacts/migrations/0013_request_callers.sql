-- The user whose write claimed a request id, with authentication on (NULL without it,
-- and for claims of servers before this column). Another user sending the same id is
-- not refused: their write claims the id under a key of their own (idempotency.py).
ALTER TABLE requests ADD COLUMN caller text;
