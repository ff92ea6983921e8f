-- Each license's live leases by expiry: the on-demand expiry before a refusal, and the
-- sweeper's per-license chunks, read the oldest lapsed leases first without a scan.
CREATE INDEX seats_license_lease_expiry ON seats (license_id, expires_at)
    WHERE released_at IS NULL AND kind = 'lease';
