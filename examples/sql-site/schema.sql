-- The users table of a small forum, as such tables really look: the phone
-- column holds what users typed, in several formats, and times are naive
-- Beijing time. Create the example database with:
--   sqlite3 examples/sql-site/site.db < examples/sql-site/schema.sql
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    nickname       TEXT NOT NULL,
    phone          TEXT,    -- NULL once unbound; the account stays
    phone_bound_at TEXT,    -- when the number was verified (Beijing time)
    last_login_at  INTEGER  -- epoch seconds
);

INSERT INTO users (id, nickname, phone, phone_bound_at, last_login_at) VALUES
    (1, 'zhangsan', '+8613800138000',     '2021-03-01 09:30:00', 1735689600),
    (2, 'lisi',     '138-0013-8000',      '2014-06-09 20:15:00', 1420070400),
    (3, 'wangwu',   '+86 139 0013 9000',  '2019-11-20 08:00:00', 1730000000),
    (4, 'zhaoliu',  '0086 139 0013 9000', '2016-02-02 12:00:00', NULL),
    (5, 'sunqi',    '13700137000',        '2022-07-15 18:45:00', 1740000000),
    (6, 'zhouba',   NULL,                 NULL,                  1700000000);
