-- Seats are looked up by how they were released only for admin releases (the holder's
-- cooldown) and transfers (the monthly limit). Indexes over just those rows: a checkout
-- or a checkin no longer writes an entry in either.
DROP INDEX seats_holder;
DROP INDEX seats_released;
CREATE INDEX seats_admin_released ON seats (license_id, fingerprint, os_user, released_at)
    WHERE release_reason = 'admin_release';
CREATE INDEX seats_transferred ON seats (license_id, released_at)
    WHERE release_reason = 'transferred';
