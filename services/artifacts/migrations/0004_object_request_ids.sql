-- The request id of the Upload or ConfirmUpload that published an object: a repeat of
-- that call (its answer was lost) is answered with the object instead of storing the
-- bytes again, or refusing them as ALREADY_EXISTS.
ALTER TABLE objects ADD COLUMN request_id text;
