-- findings.subject: what a finding is about when its code can apply to several things (a
-- database, a path, an index). (code, subject) identifies a condition; the newest finding of a
-- pair says whether it is open (warn, critical) or resolved (ok). store::findings::open reads
-- the newest finding of each pair through this index instead of scanning the code's history
-- in created_at order.
ALTER TABLE findings ADD COLUMN subject text;

CREATE INDEX findings_code_subject_created_at_idx
    ON findings (code, subject, created_at DESC, id DESC);
