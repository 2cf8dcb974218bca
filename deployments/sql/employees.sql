-- The demo table, created on the source and the destination the first time
-- their data volume is initialized (docker-entrypoint-initdb.d). The same
-- statement as internal/demo's CreateTableSQL; deployments_test.go checks
-- that they agree. Replace it with your tables' DDL, and name them in
-- CDCFLOW_TABLES.
CREATE TABLE IF NOT EXISTS public.employees (
    emp_id     integer PRIMARY KEY,
    first_name text,
    last_name  text,
    dob        date,
    city       text,
    salary     integer
);
