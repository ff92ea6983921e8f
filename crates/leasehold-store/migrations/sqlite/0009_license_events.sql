-- One license's audit log, indexed in bulk rather than at every event.
--
-- events_license (license_id, id) put each new event at the end of its own license's
-- part of the index: a page in the middle of the B-tree, so a batch of seat events over
-- many licenses wrote (and often split) a page per event. It was the most written
-- structure of a checkout (36% of its WAL frames). license_events holds the same
-- entries; the seat writer adds every event committed since `through` (a rowid of
-- events) a few times a second, sorted, so each license's page is written once for
-- many events. A license's log reads the entries here and, for events past `through`,
-- the few rows at the end of the table.
--
-- A rowid of events is the order in which events were committed: events are never
-- deleted and a rolled-back insert leaves no gap, so rowids run 1, 2, 3, … (should they
-- ever go back, the seat writer indexes every event again).
CREATE TABLE license_events (
    license_id TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (license_id, event_id)
) WITHOUT ROWID;
CREATE TABLE license_events_through (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    through INTEGER NOT NULL
);
INSERT INTO license_events (license_id, event_id)
    SELECT license_id, id FROM events WHERE license_id IS NOT NULL ORDER BY license_id, id;
INSERT INTO license_events_through (one, through) SELECT 1, COALESCE(MAX(rowid), 0) FROM events;
DROP INDEX events_license;
