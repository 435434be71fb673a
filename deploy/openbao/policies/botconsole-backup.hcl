# An operator's token for `manage.py backup`: it may take a raft snapshot of the whole storage
# and nothing else. The snapshot is encrypted by the barrier; the unseal key is not in it.
# Create one with `bao token create -policy=botconsole-backup -period=24h` and keep it with the
# backup job, not with the application. Restoring a snapshot needs the (new) root token instead.
path "sys/storage/raft/snapshot" {
  capabilities = ["read"]
}
