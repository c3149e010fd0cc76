-- For the dashboards (issue 13).
-- The capacity of each Auto Scaling group at each discovery refresh, and the
-- target its target-tracking policy holds, for the fleet dashboard. NULL in
-- rows written before this migration (and target_* for a group without a
-- target-tracking policy, or when the policies could not be read).
ALTER TABLE asg_membership ADD COLUMN desired_capacity INTEGER;
ALTER TABLE asg_membership ADD COLUMN min_size INTEGER;
ALTER TABLE asg_membership ADD COLUMN max_size INTEGER;
ALTER TABLE asg_membership ADD COLUMN target_metric TEXT;
ALTER TABLE asg_membership ADD COLUMN target_value REAL;

-- The per-instance dashboard reads one instance's scrape health over days:
-- by (instance, time), not every instance's rows of the range.
CREATE INDEX scrape_status_by_instance ON scrape_status (instance_id, time);

-- The fleet dashboard's failed intervals: only the rows of scrapes that
-- stored nothing, so its cost follows failures, not the fleet's size.
CREATE INDEX scrape_status_failed ON scrape_status (time, instance_id) WHERE up = 0;
