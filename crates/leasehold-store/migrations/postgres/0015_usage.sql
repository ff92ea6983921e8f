-- DESIGN §8: usage analytics. Times are ms since the epoch, UTC; an hour or a day is
-- named by its start.

-- Refusals as they happen (NO_SEATS, and a holder joining a wait queue): per license,
-- hour and holder, so that a holder refused ten times counts as one person.
CREATE TABLE usage_denials (
    license_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    holder TEXT NOT NULL,
    denials BIGINT NOT NULL,
    PRIMARY KEY (license_id, hour, holder)
);

-- The most holders a license's wait queue held in an hour.
CREATE TABLE usage_queue (
    license_id TEXT NOT NULL,
    hour BIGINT NOT NULL,
    peak_queued BIGINT NOT NULL,
    PRIMARY KEY (license_id, hour)
);

-- Closed hours and days, rolled up from the seat ledger (only those with seats held).
CREATE TABLE usage_buckets (
    license_id TEXT NOT NULL,
    size TEXT NOT NULL CHECK (size IN ('hour', 'day')),
    start BIGINT NOT NULL,
    peak_in_use BIGINT NOT NULL,
    seat_ms BIGINT NOT NULL,
    holders BIGINT NOT NULL,
    PRIMARY KEY (license_id, size, start)
);

-- How far each license is rolled up: the end of its last closed hour, and day.
CREATE TABLE usage_rollups (
    license_id TEXT PRIMARY KEY,
    hours_through BIGINT NOT NULL,
    days_through BIGINT NOT NULL
);

-- When refusals began to be counted: before it they are unknown.
CREATE TABLE usage_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    denials_since BIGINT NOT NULL
);
INSERT INTO usage_state (id, denials_since) VALUES (1, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT);
