-- WordPress with WooCommerce, trimmed: the users table and the meta table
-- where WooCommerce keeps a customer's numbers (billing_phone and, since
-- 5.6, shipping_phone), usually the same number twice. user_registered is
-- UTC ("GMT" in WordPress terms). Load with: mysql shop < schema.sql
CREATE TABLE wp_users (
  ID bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  user_login varchar(60) NOT NULL DEFAULT '',
  user_pass varchar(255) NOT NULL DEFAULT '',
  user_email varchar(100) NOT NULL DEFAULT '',
  user_registered datetime NOT NULL DEFAULT '0000-00-00 00:00:00',
  display_name varchar(250) NOT NULL DEFAULT '',
  PRIMARY KEY (ID),
  KEY user_login_key (user_login)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE wp_usermeta (
  umeta_id bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  user_id bigint(20) unsigned NOT NULL DEFAULT '0',
  meta_key varchar(255) DEFAULT NULL,
  meta_value longtext,
  PRIMARY KEY (umeta_id),
  KEY user_id (user_id),
  KEY meta_key (meta_key(191))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT INTO wp_users (ID, user_login, user_registered, display_name) VALUES
  (1, 'shopadmin', '0000-00-00 00:00:00', 'Shop Admin'),
  (2, 'zhangsan',  '2021-03-01 01:30:00', 'zhangsan'),
  (3, 'lisi',      '2014-06-09 12:15:00', 'lisi'),
  (4, 'wangwu',    '2019-11-20 00:00:00', 'wangwu'),
  (5, 'sunqi',     '2022-07-15 10:45:00', 'sunqi');

INSERT INTO wp_usermeta (user_id, meta_key, meta_value) VALUES
  (2, 'billing_phone',  '+86 138 0013 8000'),
  (2, 'shipping_phone', '13800138000'),
  (2, 'nickname',       'zhangsan'),
  (3, 'billing_phone',  '138-0013-8000'),
  (4, 'billing_phone',  '+86-139-0013-9000'),
  (5, 'billing_phone',  '13700137000'),
  (5, 'shipping_phone', '137 0013 7000');
