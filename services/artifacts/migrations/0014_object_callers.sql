-- The user whose upload published an object under its request id, with authentication
-- on (NULL without it, and for objects published before this column): a repeat found
-- by the id on the object (0004), once its publication was pruned, is that user's
-- alone, as their claims of request ids are (idempotency.py).
ALTER TABLE objects ADD COLUMN caller text;
