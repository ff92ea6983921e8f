-- One lease expiry index, as the design has it: each license's live leases by expiry
-- (seats_license_lease_expiry) serves the sweeper, the on-demand expiry before a refusal
-- and a refusal's retry_after_s. The global one cost every heartbeat, checkout and
-- checkin a second index entry to move; the sweeper now finds licenses with lapsed
-- leases through the per-license index instead.
DROP INDEX seats_lease_expiry;
