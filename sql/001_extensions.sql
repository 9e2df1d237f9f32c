-- TimescaleDB must be in shared_preload_libraries; `wattline up` and the test
-- fixtures configure that for the PostgreSQL they manage.
CREATE EXTENSION IF NOT EXISTS timescaledb;
