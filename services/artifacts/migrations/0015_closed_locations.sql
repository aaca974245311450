-- Locations drained for good (operations 0007: a collected run's directory): an upload
-- or a publication under one is refused (LOCATION_DELETED), where it was kept as a
-- reuse's, under a directory no run owns and no collection would queue again.
CREATE TABLE closed_locations (
    project text NOT NULL,
    path text COLLATE "C" NOT NULL,
    close_time timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (project, path)
);
