-- `dwh cdm --full`: the next chunk of users, in key order after $1, at most $2.
SELECT h_user_pk FROM dds.h_user WHERE h_user_pk > $1 ORDER BY h_user_pk LIMIT $2
