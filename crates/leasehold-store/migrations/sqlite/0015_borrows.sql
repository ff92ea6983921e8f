-- DESIGN §7: a license's borrows still out, by when they end (the sweeper ends them then).
CREATE INDEX seats_borrows ON seats (license_id, expires_at)
    WHERE kind = 'borrow' AND released_at IS NULL;
