-- "Current" defined once: an order's current status is its newest dds.s_order_status row (a
-- satellite's rows are the changes, in the order of the source's timestamps; README "The
-- model"). The report, the reconciliation check and the CDM facts read it from here instead of
-- each repeating the subquery. Written as a probe per order (not DISTINCT ON over the whole
-- satellite): joined on h_order_pk, PostgreSQL reads one order's status with one backward scan of
-- the satellite's primary key (h_order_pk, effective_dt), stopping at the first row, as the
-- CDM facts of a few users need; a DISTINCT ON view would be sorted whole for them.
CREATE VIEW dds.current_order_status AS
SELECT o.h_order_pk, s.effective_dt, s.status
FROM dds.h_order o
CROSS JOIN LATERAL (
    SELECT s.effective_dt, s.status FROM dds.s_order_status s
    WHERE s.h_order_pk = o.h_order_pk
    ORDER BY s.effective_dt DESC LIMIT 1
) s;

COMMENT ON VIEW dds.current_order_status IS
    'Each order''s current status: its newest s_order_status row';
GRANT SELECT ON dds.current_order_status TO dwh_dds, dwh_cdm;
