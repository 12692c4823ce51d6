"""The SQLite ledger's file format: its stamp, its version and its tables.

Beside the ledger, which makes the file, the fleet counters' store reads the stamp
to refuse a file that is not a ledger.
"""

APPLICATION_ID = 0x51524C47  # "QRLG"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    pool   TEXT    NOT NULL,
    series TEXT    NOT NULL,
    bucket INTEGER NOT NULL,
    amount INTEGER NOT NULL,
    PRIMARY KEY (pool, series, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    subject TEXT PRIMARY KEY,
    until   REAL,
    reason  TEXT NOT NULL
) WITHOUT ROWID;
"""
