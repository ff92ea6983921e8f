-- A contact's held seats: only seats assigned to a contact. Leases and activations have
-- none, yet each live one had an entry (under NULL) that every checkout added and every
-- checkin removed. Lookups by contact (contact_id = $1) imply contact_id IS NOT NULL, so
-- both stores still use this index for them.
DROP INDEX seats_contact_active;
CREATE INDEX seats_contact_active ON seats (contact_id)
    WHERE released_at IS NULL AND contact_id IS NOT NULL;
