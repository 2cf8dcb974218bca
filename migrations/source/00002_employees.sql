-- The demo table that the seed pipeline replicates: captured on the source
-- by default (the capture program installs its trigger).

-- +goose Up
CREATE TABLE IF NOT EXISTS public.employees (
    emp_id     integer PRIMARY KEY,
    first_name text,
    last_name  text,
    dob        date,
    city       text,
    salary     integer
);

-- +goose Down
DROP TABLE public.employees;
