-- What the daemon last saw of its own parts, for the dashboard's status
-- panel: one row per component ('discovery', 'store'), replaced in place.
--   checked  epoch seconds of the last attempt (a discovery refresh, a flush)
--   ok       1 when it succeeded
--   last_ok  epoch seconds of the last success, NULL before the first
--   error    the last attempt's error (discovery); for the store, the error of
--            a flush that failed since the previous successful one
CREATE TABLE component_status (
    component TEXT PRIMARY KEY,
    checked REAL NOT NULL,
    ok INTEGER NOT NULL,
    last_ok REAL,
    error TEXT
) WITHOUT ROWID;
