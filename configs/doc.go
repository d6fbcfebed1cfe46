// Package configs assembles the configuration of a discovery node from the
// sections owned by each package (node identity, http → api.Config,
// registry → registry.Config, cluster → syncup.Config, log) and loads it
// with viper. It and cmd/ are the only importers of viper.
//
// Every key, its default and a one-line description are in the embedded
// file discovery.yaml; `discovery config` prints the effective configuration
// in the same layout.
//
// Sources, lowest precedence first:
//
//  1. DefaultConfig()
//  2. the embedded discovery.yaml
//  3. the YAML file given with --config FILE (or DISCOVERY_CONFIG=FILE)
//  4. environment variables DISCOVERY_<KEY>, the key path upper-cased with
//     "." replaced by "_": http.addr → DISCOVERY_HTTP_ADDR,
//     http.limits.max_body_bytes → DISCOVERY_HTTP_LIMITS_MAX_BODY_BYTES
//  5. flags named by the key: --http.addr, --cluster.join, ...
//
// Text forms (environment and flags):
//
//   - durations: Go syntax, 500ms, 30s, 15m, 1h (a bare number is refused,
//     also in files, because it would silently mean nanoseconds)
//   - lists (cluster.join): comma-separated, blanks ignored:
//     DISCOVERY_CLUSTER_JOIN=node1:7946,node2:7946; an empty value clears
//     the list. Flags may also repeat: --cluster.join a --cluster.join b.
//   - cluster.zones: zones separated by ";", each zone=seeds with seeds
//     separated by "|" (or ","):
//     DISCOVERY_CLUSTER_ZONES='zoneB=h1:7171|h2:7171;zoneC=h3:7171'.
//     The environment or flag value replaces the file's map entirely. Zone
//     names keep their case. In a file, zones is a mapping of zone name to a
//     list of seeds (or the same one-line string).
//
// Errors: an unknown key in a file, an unknown DISCOVERY_* variable and a
// value of the wrong type are all errors that name the key (and variable).
// DISCOVERY_NODES (the kratos client's seed list) and DISCOVERY_IMAGE (the
// compose image tag) are not configuration and are ignored. When a variable
// appears twice in the environment the last one wins.
package configs
