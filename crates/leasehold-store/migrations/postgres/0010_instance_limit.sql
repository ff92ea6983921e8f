-- DESIGN §11: a lease counts at most this many instances (409 INSTANCE_LIMIT past it).
ALTER TABLE licenses ADD COLUMN max_instances_per_lease BIGINT NOT NULL DEFAULT 64;
