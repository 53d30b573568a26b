-- ECShop 2.7/3.x, trimmed. MyISAM as installed; reg_time and last_login are
-- written by ECShop's gmtime(), which is time() minus the server's UTC
-- offset: on a Beijing-time server every value is 8 hours behind the real
-- unix time. A customer's number may be in mobile_phone, home_phone or both.
-- Load with: mysql shop < schema.sql
CREATE TABLE ecs_users (
  user_id mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  email varchar(60) NOT NULL DEFAULT '',
  user_name varchar(60) NOT NULL DEFAULT '',
  password varchar(32) NOT NULL DEFAULT '',
  reg_time int(10) unsigned NOT NULL DEFAULT '0',
  last_login int(11) unsigned NOT NULL DEFAULT '0',
  office_phone varchar(20) NOT NULL DEFAULT '',
  home_phone varchar(20) NOT NULL DEFAULT '',
  mobile_phone varchar(20) NOT NULL DEFAULT '',
  is_validated tinyint(3) unsigned NOT NULL DEFAULT '0',
  PRIMARY KEY (user_id),
  UNIQUE KEY user_name (user_name)
) ENGINE=MyISAM DEFAULT CHARSET=utf8;

INSERT INTO ecs_users (user_id, user_name, reg_time, last_login, mobile_phone, home_phone) VALUES
  (1, 'zhangsan', 1614533400, 1735660800, '13800138000',       ''),
  (2, 'lisi',     1402287300, 0,          '+86 138-0013-8000', ''),
  (3, 'wangwu',   1574179200, 1729971200, '8613900139000',     ''),
  (4, 'sunqi',    1657853100, 1739971200, '137-0013-7000',     '13700137000'),
  (5, 'zhouba',   0,          0,          '',                  ''),
  (6, 'wuyi',     1690000000, 1739971200, '13600136000',       '+86 139 0013 9000');
