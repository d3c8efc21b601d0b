-- See 0011.
DROP TABLE IF EXISTS {database}.cdr_counted_mv;
