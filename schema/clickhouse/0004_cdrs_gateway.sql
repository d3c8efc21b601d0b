-- gateway: the gateway of the attempt the call is accounted on, the
-- answered one or the last one tried (schema.CDR Gateway).
ALTER TABLE {database}.cdrs ADD COLUMN gateway String DEFAULT '';
