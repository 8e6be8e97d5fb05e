-- Orders per day of order_dt by their current status (dds.current_order_status), from DDS.
SELECT o.order_dt::date::text AS day,
       count(*) FILTER (WHERE s.status = 'CLOSED') AS closed,
       count(*) FILTER (WHERE s.status = 'CANCELLED') AS cancelled
FROM dds.h_order o
JOIN dds.current_order_status s ON s.h_order_pk = o.h_order_pk
GROUP BY 1
ORDER BY 1
