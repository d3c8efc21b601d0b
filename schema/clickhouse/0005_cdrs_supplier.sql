-- supplier: the supplier of the attempt the call is accounted on
-- (schema.CDR Supplier).
ALTER TABLE {database}.cdrs ADD COLUMN supplier String DEFAULT '';
