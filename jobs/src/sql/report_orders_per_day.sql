-- Orders per day of order_dt by their current status (the newest s_order_status row), from DDS.
SELECT o.order_dt::date::text AS day,
       count(*) FILTER (WHERE s.status = 'CLOSED') AS closed,
       count(*) FILTER (WHERE s.status = 'CANCELLED') AS cancelled
FROM dds.h_order o
JOIN LATERAL (
    SELECT status FROM dds.s_order_status s
    WHERE s.h_order_pk = o.h_order_pk ORDER BY s.effective_dt DESC LIMIT 1
) s ON true
GROUP BY 1
ORDER BY 1
