//! The files in deploy/ against the code: Prometheus config and rules pass
//! promtool; the dashboard and the alerts name only metrics the code exports;
//! compose and Kubernetes name only images the Dockerfile builds (or pinned
//! public ones), flags the binaries accept, environment variables the code
//! reads, metrics ports the daemons serve, and files and secrets that exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use subliminal_tests::bin;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

fn yaml(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `subliminal_*` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("subliminal_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        out.insert(name.clone());
        rest = &rest[at + name.len()..];
    }
    out
}

fn exported() -> BTreeSet<String> {
    subliminal_shared::metrics::metrics()
        .names()
        .into_iter()
        .collect()
}

/// The `--flags` a binary's --help lists.
fn flags(binary: &str) -> BTreeSet<String> {
    let out = Command::new(bin(binary))
        .arg("--help")
        .output()
        .expect("binary runs");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '=')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect()
}

/// Environment variables the code reads: clap `env = "..."` attributes and
/// `var("...")` / `var_os("...")` calls anywhere in the workspace's sources.
fn env_read_by_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir()
                && !name.starts_with('.')
                && name != "target"
                && name != "tests"
                && name != "data"
            {
                stack.push(path);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for marker in ["env = \"", "var(\"", "var_os(\""] {
                    let mut rest = text.as_str();
                    while let Some(at) = rest.find(marker) {
                        rest = &rest[at + marker.len()..];
                        let value: String = rest.chars().take_while(|c| *c != '"').collect();
                        if value
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                        {
                            names.insert(value);
                        }
                    }
                }
            }
        }
    }
    names
}

fn env_ok(name: &str, known: &BTreeSet<String>) -> bool {
    // The store passes every AWS_* variable to object_store's S3 settings.
    known.contains(name) || name.starts_with("AWS_")
}

fn dockerfile_targets() -> BTreeSet<String> {
    std::fs::read_to_string(deploy("docker/Dockerfile"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1).map(|t| t.trim().to_owned()))
        .collect()
}

/// Ours: `subliminal-<target>` built from the Dockerfile. Theirs: pinned to a version.
fn check_image(
    image: &str,
    binary_for: impl Fn(&str) -> Option<&'static str>,
) -> Option<&'static str> {
    if let Some(target) = image.strip_prefix("subliminal-") {
        assert!(
            dockerfile_targets().contains(target),
            "image {image}: no `AS {target}` stage in deploy/docker/Dockerfile"
        );
        let binary = binary_for(target);
        assert!(binary.is_some(), "image {image} has no entrypoint binary");
        binary
    } else {
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "image {image} must be pinned to a version"
        );
        None
    }
}

fn entrypoint(target: &str) -> Option<&'static str> {
    match target {
        "worker" => Some("subliminal-worker"),
        "control" => Some("subliminal-scheduler"),
        _ => None,
    }
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The port in `--metrics-addr host:port` of an argument list.
fn metrics_port(args: &[String]) -> Option<String> {
    let at = args.iter().position(|a| a == "--metrics-addr")?;
    args.get(at + 1)?.rsplit(':').next().map(str::to_owned)
}

fn check_args(binary: &str, args: &[String]) {
    let accepted = flags(binary);
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg.split('=').next().unwrap();
        assert!(
            accepted.contains(flag),
            "{binary} has no flag {flag} (it has {accepted:?})"
        );
    }
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    promtool(&[
        "check",
        "config",
        deploy("prometheus/prometheus.yml").to_str().unwrap(),
    ]);
    promtool(&[
        "check",
        "rules",
        deploy("prometheus/alerts.yml").to_str().unwrap(),
    ]);
}

#[test]
fn the_dashboard_and_the_alerts_name_only_exported_metrics() {
    let exported = exported();
    let dashboard_text = std::fs::read_to_string(deploy("grafana/subliminal.json")).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("dashboard is JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} uses the datasource variable",
            panel["title"]
        );
        for target in panel["targets"].as_array().unwrap() {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"sweep"),
        "{vars:?}"
    );
    assert!(exprs.contains("$sweep"), "the sweep variable is used");
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    for (what, text) in [("dashboard", &exprs), ("alerts", &alerts)] {
        let used = metric_names(text);
        assert!(used.len() >= 5, "{what} names {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics the code does not export: {unknown:?}"
        );
    }
    // The alerts' job names are the ones both scrape configs give.
    let k8s = std::fs::read_to_string(deploy("k8s/prometheus-scrape.yml")).unwrap();
    let compose = std::fs::read_to_string(deploy("prometheus/prometheus.yml")).unwrap();
    for job in ["subliminal-scheduler", "subliminal-worker"] {
        assert!(alerts.contains(job) && compose.contains(job), "{job}");
    }
    assert!(k8s.contains("replacement: subliminal-$1") && k8s.contains("(scheduler|worker)"));
}

#[test]
fn the_compose_stack_names_only_things_that_exist() {
    let known_env = env_read_by_code();
    let doc = &yaml(&deploy("compose.yaml"))[0];
    let services = doc["services"].as_hash().expect("services");
    assert!(services.len() >= 7);
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let image = service["image"]
            .as_str()
            .unwrap_or_else(|| panic!("service {name} names an image"));
        let binary = check_image(image, entrypoint);
        for volume in strings(&service["volumes"]) {
            let host = volume.split(':').next().unwrap();
            if host.starts_with('.') {
                assert!(
                    deploy(host).exists(),
                    "service {name} mounts {host}, which does not exist"
                );
            }
        }
        let Some(binary) = binary else { continue };
        assert_eq!(
            service["build"]["target"].as_str(),
            image.strip_prefix("subliminal-"),
            "service {name} builds its image"
        );
        let args = strings(&service["command"]);
        check_args(binary, &args);
        let port = metrics_port(&args).expect("our daemons serve metrics");
        assert!(
            strings(&service["ports"])
                .iter()
                .any(|p| p.ends_with(&format!(":{port}"))),
            "service {name} publishes {port}"
        );
        let env = service["environment"].as_hash().expect("environment");
        for key in env.keys() {
            let key = key.as_str().unwrap();
            assert!(
                env_ok(key, &known_env),
                "service {name} sets {key}, which no code reads"
            );
        }
    }
    assert!(
        services[&Yaml::String("worker".into())]["deploy"]["resources"]["reservations"]["devices"]
            [0]["driver"]
            .as_str()
            == Some("nvidia"),
        "the worker reserves a GPU"
    );
}

#[test]
fn the_kubernetes_manifests_name_only_things_that_exist() {
    let known_env = env_read_by_code();
    let kustomization = &yaml(&deploy("kustomization.yaml"))[0];
    let mut docs = Vec::new();
    for resource in strings(&kustomization["resources"]) {
        docs.extend(yaml(&deploy(&resource)));
    }
    for generator in kustomization["configMapGenerator"].as_vec().unwrap() {
        for file in strings(&generator["files"]) {
            let path = file.split('=').nth(1).unwrap();
            yaml(&deploy(path));
        }
    }
    let named = |kind: &str, name: &str| {
        docs.iter().find(|d| {
            d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
        })
    };
    let mut workloads = 0;
    for doc in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
    {
        let pod = &doc["spec"]["template"];
        for container in pod["spec"]["containers"].as_vec().unwrap() {
            let image = container["image"].as_str().unwrap();
            let Some(binary) = check_image(image, entrypoint) else {
                continue;
            };
            workloads += 1;
            let args = strings(&container["args"]);
            check_args(binary, &args);
            let port = metrics_port(&args).expect("metrics port");
            assert_eq!(
                container["ports"][0]["containerPort"]
                    .as_i64()
                    .map(|p| p.to_string()),
                Some(port.clone())
            );
            assert_eq!(
                pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
                Some(port.as_str())
            );
            for source in container["envFrom"].as_vec().unwrap() {
                let (kind, reference) = if source["configMapRef"].is_badvalue() {
                    ("Secret", &source["secretRef"])
                } else {
                    ("ConfigMap", &source["configMapRef"])
                };
                let name = reference["name"].as_str().unwrap();
                let target = named(kind, name)
                    .unwrap_or_else(|| panic!("{kind} {name} is not in deploy/k8s"));
                let data = if kind == "Secret" {
                    &target["stringData"]
                } else {
                    &target["data"]
                };
                for key in data.as_hash().unwrap().keys() {
                    let key = key.as_str().unwrap();
                    assert!(
                        env_ok(key, &known_env),
                        "{kind} {name} sets {key}, which no code reads"
                    );
                }
            }
            if binary == "subliminal-worker" {
                assert!(
                    container["resources"]["limits"]["nvidia.com/gpu"].as_i64() == Some(1),
                    "a worker asks for a GPU"
                );
                assert!(
                    !container["lifecycle"]["preStop"].is_badvalue(),
                    "a worker drains before it stops"
                );
                let grace: i64 = args
                    [args.iter().position(|a| a == "--grace-seconds").unwrap() + 1]
                    .parse()
                    .unwrap();
                let pod_grace = pod["spec"]["terminationGracePeriodSeconds"]
                    .as_i64()
                    .unwrap();
                assert!(
                    pod_grace > grace,
                    "the pod's grace period ({pod_grace}s) must outlast the worker's ({grace}s)"
                );
            }
        }
    }
    assert_eq!(workloads, 2, "the scheduler and the worker");
}
