-- Every dish with its current menu name (the newest row of s_product_names; NULL: no menu names
-- it, and each order holding it gives its own name).
SELECT p.h_product_pk,
       (SELECT s.name FROM dds.s_product_names s
        WHERE s.h_product_pk = p.h_product_pk
        ORDER BY s.effective_dt DESC LIMIT 1) AS name
FROM dds.h_product p
