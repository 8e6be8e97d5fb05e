-- `dwh cdm --full`, first: users that left the vault (a rebuilt DDS) keep no showcase rows. Their
-- tags go without an event: the warehouse no longer knows the id the application knows them by.
DELETE FROM cdm.user_product_counters c
WHERE NOT EXISTS (SELECT FROM dds.h_user u WHERE u.h_user_pk = c.user_id);
DELETE FROM cdm.user_category_counters c
WHERE NOT EXISTS (SELECT FROM dds.h_user u WHERE u.h_user_pk = c.user_id);
DELETE FROM cdm.user_tags c
WHERE NOT EXISTS (SELECT FROM dds.h_user u WHERE u.h_user_pk = c.user_id);
