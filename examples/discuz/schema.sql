-- Discuz! X3.4, trimmed to the columns the adapter reads (the real tables have
-- dozens more). As installed: MyISAM, utf8, times as unix seconds with 0 for
-- "never", the mobile number NOT NULL DEFAULT '' in the profile table, typed
-- by users in any format. Load with: mysql forum < schema.sql
CREATE TABLE pre_common_member (
  uid mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  email char(40) NOT NULL DEFAULT '',
  username char(15) NOT NULL DEFAULT '',
  password char(32) NOT NULL DEFAULT '',
  status tinyint(1) NOT NULL DEFAULT '0',
  groupid smallint(6) unsigned NOT NULL DEFAULT '0',
  regdate int(10) unsigned NOT NULL DEFAULT '0',
  credits int(10) NOT NULL DEFAULT '0',
  PRIMARY KEY (uid),
  UNIQUE KEY username (username)
) ENGINE=MyISAM DEFAULT CHARSET=utf8;

CREATE TABLE pre_common_member_profile (
  uid mediumint(8) unsigned NOT NULL,
  realname varchar(255) NOT NULL DEFAULT '',
  gender tinyint(1) NOT NULL DEFAULT '0',
  mobile varchar(255) NOT NULL DEFAULT '',
  qq varchar(255) NOT NULL DEFAULT '',
  PRIMARY KEY (uid)
) ENGINE=MyISAM DEFAULT CHARSET=utf8;

CREATE TABLE pre_common_member_status (
  uid mediumint(8) unsigned NOT NULL,
  regip char(15) NOT NULL DEFAULT '',
  lastvisit int(10) unsigned NOT NULL DEFAULT '0',
  PRIMARY KEY (uid)
) ENGINE=MyISAM DEFAULT CHARSET=utf8;

INSERT INTO pre_common_member (uid, username, regdate) VALUES
  (1, 'admin',    0),
  (2, 'zhangsan', 1614562200),
  (3, 'lisi',     1402316100),
  (4, 'wangwu',   1574208000),
  (5, 'sunqi',    1657881900),
  (6, 'zhouba',   1577808000);

INSERT INTO pre_common_member_profile (uid, mobile) VALUES
  (1, ''),
  (2, '86-13800138000'),
  (3, '(+86) 138-0013-8000'),
  (4, '１３９００１３９０００'),
  (5, '137 0013 7000'),
  (6, '+86 139 0013 9000');

INSERT INTO pre_common_member_status (uid, lastvisit) VALUES
  (1, 1735689600), (2, 1735689600), (3, 0), (4, 1730000000), (5, 1740000000);
