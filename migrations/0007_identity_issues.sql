-- Why payloads are not attributed (issue #23): one row each time it changes
-- for a scrape path, not one per scrape.
--   time      epoch seconds of the change
--   path      a listener's target groups ('web-asg', or 'a+b' for a weighted
--             listener), or the instance id of an instance scraped directly
--   source    where the identity was read, e.g. 'node_uname_info{nodename}';
--             NULL when the payload carried none, and on a 'resolved' row
--   value     the identity seen, e.g. '3f2a1b9c0d1e'
--   expected  the path's members, comma separated, as the source names them
--             (instance ids, or private DNS host names)
--   hint      add_an_identity | not_an_ec2_host_name | another_instance |
--             unknown_instance | resolved (payloads attributed again)
--   detail    the whole explanation, with what to change, as logged
CREATE TABLE identity_issues (
    time REAL NOT NULL,
    path TEXT NOT NULL,
    source TEXT,
    value TEXT,
    expected TEXT NOT NULL,
    hint TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (time, path)
) WITHOUT ROWID;
