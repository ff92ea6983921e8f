-- DESIGN §7: idle leases, and borrowed seats.
ALTER TABLE licenses ADD COLUMN idle_timeout_s BIGINT;
ALTER TABLE licenses ADD COLUMN idle_reclaim TEXT NOT NULL DEFAULT 'when_needed'
    CHECK (idle_reclaim IN ('when_needed', 'always'));
ALTER TABLE licenses ADD COLUMN max_borrow_days BIGINT NOT NULL DEFAULT 0;
ALTER TABLE licenses ADD COLUMN max_borrowed_seats BIGINT;

-- What each instance of a lease last said of its user (a JSON object, kept only once one
-- reported idleness), and since when the whole lease has been unused (NULL: in use).
ALTER TABLE seats ADD COLUMN idle_reports TEXT;
ALTER TABLE seats ADD COLUMN idle_since BIGINT;
-- The longest-idle live lease of a license, for a checkout that finds it full.
CREATE INDEX seats_idle ON seats (license_id, idle_since)
    WHERE idle_since IS NOT NULL AND released_at IS NULL;
