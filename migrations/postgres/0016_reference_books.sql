-- Reference books of the Ministry's NSI, synchronized by the nsi-sync job: every version
-- of every configured book is kept. A version's rows are loaded under a generation of its
-- own and become visible in one transaction once every row is in (`generation`), so a
-- version being loaded or reloaded never shows half its rows, and the current version
-- only ever points at a fully loaded one.
CREATE TABLE nsi_books (
    oid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    synced_at BIGINT NOT NULL
);
CREATE TABLE nsi_versions (
    oid TEXT NOT NULL,
    version TEXT NOT NULL,
    name TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    last_update TEXT NOT NULL,
    archive INTEGER NOT NULL DEFAULT 0,
    rows_count BIGINT NOT NULL DEFAULT 0,
    loaded INTEGER NOT NULL DEFAULT 0,
    is_current INTEGER NOT NULL DEFAULT 0,
    -- The generation whose rows are the version's (0: none yet).
    generation BIGINT NOT NULL DEFAULT 0,
    -- A load under way (or cut off): its generation and the publisher's stamp it loads.
    loading_generation BIGINT,
    loading_stamp TEXT,
    synced_at BIGINT NOT NULL,
    PRIMARY KEY (oid, version)
);
CREATE TABLE nsi_entries (
    oid TEXT NOT NULL,
    version TEXT NOT NULL,
    generation BIGINT NOT NULL,
    position BIGINT NOT NULL,
    code TEXT NOT NULL,
    display TEXT NOT NULL,
    raw TEXT NOT NULL,
    PRIMARY KEY (oid, version, generation, code)
);
CREATE INDEX nsi_entries_position ON nsi_entries (oid, version, generation, position);
