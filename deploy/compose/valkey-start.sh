#!/bin/sh
# Starts Valkey with deploy/redis/users.acl, the botconsole user's password hash filled in from the
# secret file (the ACL file keeps only the hash; see deploy/redis/README.md).
set -eu
hash=$(tr -d '\n' </run/secrets/redis_password | sha256sum | cut -d' ' -f1)
umask 077
sed "s/#REPLACE_WITH_THE_SHA256_OF_THE_PASSWORD/#$hash/" /etc/botconsole/users.acl >/data/users.acl
exec valkey-server --bind 0.0.0.0 --protected-mode yes --aclfile /data/users.acl \
    --appendonly yes --save "" --dir /data
