-- A heartbeat moves no index entry. Each license's live leases are indexed by when the
-- sweeper should next look at them (sweep_at), not by their expiry: sweep_at is set to
-- the expiry when a lease is taken and is never later than it, so a lease cannot lapse
-- before its sweep_at. A heartbeat pushes only expires_at (a column no index holds), and
-- changes one page, the row's, instead of three. When a lease's sweep_at has passed, the
-- sweeper (or a full license's checkout) ends it if it lapsed, or moves its sweep_at to
-- its expiry: in index order, one entry per lease per lease period instead of one per
-- heartbeat.
ALTER TABLE seats ADD COLUMN sweep_at BIGINT;
UPDATE seats SET sweep_at = expires_at WHERE kind = 'lease' AND released_at IS NULL;
DROP INDEX seats_license_lease_expiry;
CREATE INDEX seats_license_lease_sweep ON seats (license_id, sweep_at)
    WHERE released_at IS NULL AND kind = 'lease';
