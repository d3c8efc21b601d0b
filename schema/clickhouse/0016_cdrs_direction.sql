-- Who placed a call and what kind of call it was (schema.CDR Subscriber,
-- Class, DID, Direction): subscriber the digest-authenticated caller,
-- class the trunk's dial plan's label ("mobile"), did the number of ours
-- an inbound call was for, direction outbound, inbound or onnet. Rows
-- written before this column read ''. None is a sorting key column, and
-- the views of the hourly aggregates read cdr_changes, not cdrs, so
-- nothing else changes.
ALTER TABLE {database}.cdrs
    ADD COLUMN subscriber String DEFAULT '',
    ADD COLUMN class String DEFAULT '',
    ADD COLUMN did String DEFAULT '',
    ADD COLUMN direction String DEFAULT '';
