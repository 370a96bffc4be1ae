-- revbridge schema, version 4: an outbox item names the lease owner whose call to the target
-- is under way (set when the item is marked in flight, cleared when the call's outcome is
-- recorded). A worker taking the item over learns from it that a call by another holder may
-- still commit (DESIGN.md §8: a lost lease during an in-flight call).
ALTER TABLE outbox ADD COLUMN sender TEXT;
