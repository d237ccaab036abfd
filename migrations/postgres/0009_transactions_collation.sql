-- Transaction-log keys are ASCII identifiers (UUIDs, status and operation names): compared
-- bytewise they sort the same and every index insert skips the locale's strcoll.
ALTER TABLE transactions
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN status TYPE TEXT COLLATE "C",
    ALTER COLUMN operation TYPE TEXT COLLATE "C",
    ALTER COLUMN correlation_id TYPE TEXT COLLATE "C";
