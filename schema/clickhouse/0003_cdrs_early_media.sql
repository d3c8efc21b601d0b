-- early_media: 1 when the caller got a 183 Session Progress (schema.CDR
-- EarlyMedia). Rows written before this column read 0.
ALTER TABLE {database}.cdrs ADD COLUMN early_media UInt8 DEFAULT 0;
