# OpenBao for botconsole in production: integrated (raft) storage, TLS on every listener, an audit
# log, no UI. Install as /etc/openbao/openbao.hcl on the OpenBao host (not the app host, if you
# can spare one) and replace vault.example.internal with its name, which must be in its certificate.
#
# First start, once:
#   bao operator init                       # 5 unseal key shares, 3 to unseal: keep them apart, offline
#   bao operator unseal                     # three times, with three different shares
#   deploy/openbao/bootstrap.sh             # on the app host: mounts, keys, policies, AppRoles
# Every restart of OpenBao leaves it sealed until three key holders unseal it again.

ui            = false
cluster_name  = "botconsole"
api_addr      = "https://vault.example.internal:8200"
cluster_addr  = "https://vault.example.internal:8201"
# Integrated storage keeps its data in memory-mapped files that mlock cannot hold; swap should be
# off (or encrypted) on this host instead.
disable_mlock = true
log_level     = "info"

storage "raft" {
  path    = "/var/lib/openbao/data"
  node_id = "openbao-1"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/etc/openbao/tls/fullchain.pem"
  tls_key_file    = "/etc/openbao/tls/privkey.pem"
  tls_min_version = "tls12"

  telemetry {
    unauthenticated_metrics_access = false
  }
}

# Every request and response, with secrets HMAC'd (never in clear), to a file outside OpenBao's
# storage. Declared here rather than through the API, which OpenBao refuses by default: an API
# that can point the audit log at any path is a way to write files on this host.
audit "file" "file" {
  options {
    file_path = "/var/log/openbao/audit.log"
    mode      = "0600"
  }
}
