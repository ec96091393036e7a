//! The Kubernetes manifests state the facts a sidecar deployment relies on.
//! Read line by line (the manifests are plain, one key per line), so a test
//! needs no YAML parser; a reformatting that breaks these reads fails loudly.

fn manifest() -> Vec<String> {
    let text =
        std::fs::read_to_string(crate::support::repo().join("deploy/kubernetes/deployment.yaml"))
            .unwrap();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim_end().to_owned())
        .collect()
}

/// The value of `key:` on the first line at or after `from` that has it.
fn value_after(lines: &[String], from: usize, key: &str) -> (usize, String) {
    lines[from..]
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.strip_prefix(&format!("{key}:"))
                .map(|v| (from + i, v.trim().trim_matches('"').to_owned()))
        })
        .unwrap_or_else(|| panic!("no `{key}` after line {from}"))
}

fn line_of(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.trim() == needle)
        .unwrap_or_else(|| panic!("no line `{needle}`"))
}

/// The value of the environment variable `name` of the rolegate container.
fn env(lines: &[String], name: &str) -> String {
    let at = line_of(lines, &format!("- name: {name}"));
    value_after(lines, at, "value").1
}

#[test]
fn probes_point_at_the_ops_listener() {
    let l = manifest();
    let ops_port = env(&l, "ROLEGATE_OPS_LISTEN")
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    for (probe, path) in [("livenessProbe:", "/live"), ("readinessProbe:", "/ready")] {
        let at = line_of(&l, probe);
        let (p, got_path) = value_after(&l, at, "path");
        assert_eq!(got_path, path, "{probe}");
        assert_eq!(value_after(&l, p, "port").1, ops_port, "{probe} port");
    }
}

#[test]
fn the_policy_config_map_is_mounted_where_rolegate_reads_policies() {
    let l = manifest();
    for (volume, config_map, var) in [
        ("policies", "rolegate-policies", "ROLEGATE_POLICIES_DIR"),
        ("schema", "rolegate-schema", "ROLEGATE_SCHEMA_DIR"),
    ] {
        let mounts: Vec<usize> = l
            .iter()
            .enumerate()
            .filter(|(_, x)| x.trim() == format!("- name: {volume}"))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(mounts.len(), 2, "one mount and one volume named {volume}");
        let (_, mount_path) = value_after(&l, mounts[0], "mountPath");
        assert_eq!(mount_path, env(&l, var));
        assert!(
            l[mounts[0] + 1..mounts[0] + 4]
                .iter()
                .all(|x| !x.contains("subPath")),
            "{volume}: a subPath mount never sees ConfigMap updates"
        );
        let (cm_line, _) = value_after(&l, mounts[1], "configMap");
        assert_eq!(value_after(&l, cm_line, "name").1, config_map);
    }
}

#[test]
fn the_grace_period_outlasts_the_drain_and_nobody_runs_as_root() {
    let l = manifest();
    let grace: u64 = value_after(&l, 0, "terminationGracePeriodSeconds")
        .1
        .parse()
        .unwrap();
    let drain: u64 = env(&l, "ROLEGATE_DRAIN_SECONDS").parse().unwrap();
    assert!(
        grace > drain,
        "grace {grace} s must exceed the drain {drain} s"
    );
    let containers = l
        .iter()
        .filter(|x| matches!(x.trim(), "- name: app" | "- name: rolegate"))
        .count();
    assert_eq!(containers, 2);
    let non_root = l
        .iter()
        .filter(|x| x.trim() == "runAsNonRoot: true")
        .count();
    assert!(non_root >= containers, "every container sets runAsNonRoot");
    assert!(l
        .iter()
        .all(|x| x.trim() != "runAsUser: 0" && x.trim() != "runAsNonRoot: false"));
    let ro = l
        .iter()
        .filter(|x| x.trim() == "readOnlyRootFilesystem: true")
        .count();
    assert_eq!(
        ro, containers,
        "read-only root filesystem for both containers"
    );
}

fn lines_of(path: &str) -> Vec<String> {
    std::fs::read_to_string(crate::support::repo().join(path))
        .unwrap()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim_end().to_owned())
        .collect()
}

/// The Istio example: a `CUSTOM` policy naming the provider the mesh config
/// defines, which fails closed and points (through the ServiceEntry) at the
/// port rolegate's ext_authz listener uses. (Envoy itself is run on the
/// Envoy example by `ext_authz_envoy.rs`; there is no Istio here to run.)
#[test]
fn the_istio_example_asks_rolegate_and_fails_closed() {
    let policy = lines_of("deploy/istio/authorization-policy.yaml");
    let mesh = lines_of("deploy/istio/mesh-config.yaml");
    assert_eq!(value_after(&policy, 0, "kind").1, "AuthorizationPolicy");
    assert_eq!(value_after(&policy, 0, "action").1, "CUSTOM");
    let provider = value_after(&policy, line_of(&policy, "provider:"), "name").1;

    let at = line_of(&mesh, "extensionProviders:");
    let (at, name) = value_after(&mesh, at, "name");
    assert_eq!(
        name, provider,
        "the policy names the mesh config's provider"
    );
    let grpc = line_of(&mesh, "envoyExtAuthzGrpc:");
    assert!(grpc > at);
    let service = value_after(&mesh, grpc, "service").1;
    let port = value_after(&mesh, grpc, "port").1;
    assert_eq!(value_after(&mesh, grpc, "failOpen").1, "false");

    // The ServiceEntry gives the service name the port rolegate listens on,
    // as the example config and the docs say.
    let entry = line_of(&mesh, "kind: ServiceEntry");
    let hosts = entry + line_of(&mesh[entry..], "hosts:");
    assert_eq!(mesh[hosts + 1].trim(), format!("- {service}"));
    assert_eq!(value_after(&mesh, entry, "number").1, port);
    assert_eq!(value_after(&mesh, entry, "protocol").1, "GRPC");
    let example =
        std::fs::read_to_string(crate::support::repo().join("deploy/config/rolegate.example.toml"))
            .unwrap();
    assert!(example.contains(&format!("ext_authz_listen = \"127.0.0.1:{port}\"")));
}

/// The Envoy example fails closed and speaks the v3 API; what it does is run
/// by `ext_authz_envoy.rs`, under a real Envoy.
#[test]
fn the_envoy_example_fails_closed() {
    let envoy = lines_of("deploy/envoy/rolegate-ext-authz.yaml");
    let filter = line_of(&envoy, "- name: envoy.filters.http.ext_authz");
    assert_eq!(value_after(&envoy, filter, "failure_mode_allow").1, "false");
    assert_eq!(value_after(&envoy, filter, "transport_api_version").1, "V3");
    assert_eq!(value_after(&envoy, filter, "encode_raw_headers").1, "true");
}
