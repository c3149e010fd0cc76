-- Via-ALB rounds record what they had to reach and what it cost, so that a
-- target group's coverage (reached_wanted / wanted) and price (requests /
-- wanted) read straight from the table. Rows written before this migration
-- have wanted = members, reached_wanted = reached (what those rounds did).
ALTER TABLE alb_rounds ADD COLUMN wanted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alb_rounds ADD COLUMN reached_wanted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alb_rounds ADD COLUMN abandoned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alb_rounds ADD COLUMN budget INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alb_rounds ADD COLUMN duration_seconds REAL NOT NULL DEFAULT 0;
UPDATE alb_rounds SET wanted = members, reached_wanted = min(reached, members);
