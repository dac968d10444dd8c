//! The deployment files stay in step with the server: every variable that `docker-compose.yml`,
//! the Dockerfile's images, `deploy/k8s.yaml` and `.env.example` set is a setting that
//! `millm serve` (or the client) really reads, and the files have the shape the README promises.
//! No Docker engine runs in the tests, so this is what can be checked.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use millm::cli::Cli;
use serde_yaml_ng::Value;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn env_names(cmd: &clap::Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The environment variables `millm serve` reads: the settings.
fn server_settings() -> BTreeSet<String> {
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("millm has a serve subcommand");
    let names = env_names(serve);
    assert!(names.contains("DATABASE_URL") && names.contains("MILLM_DATA_DIR"));
    names
}

/// Every variable any subcommand reads (the server's settings plus the client's).
fn all_settings() -> BTreeSet<String> {
    let cli = Cli::command();
    let mut names = env_names(&cli);
    for sub in cli.get_subcommands() {
        names.extend(env_names(sub));
    }
    names
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

/// The keys of a compose `environment`, in its map or its list form.
fn compose_env(service: &Value) -> Vec<String> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .keys()
            .map(|k| k.as_str().expect("string keys").to_string())
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| {
                let s = i.as_str().expect("string items");
                s.split('=').next().unwrap_or(s).to_string()
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("environment is neither a map nor a list: {other:?}"),
    }
}

#[test]
fn compose_sets_only_settings_the_server_reads() {
    let settings = server_settings();
    let doc = compose();
    let env = compose_env(&doc["services"]["millm"]);
    assert!(!env.is_empty(), "the millm service sets its settings");
    for name in &env {
        assert!(
            settings.contains(name),
            "docker-compose.yml sets {name} for millm, but `millm serve` reads no such setting (it reads {settings:?})"
        );
    }
}

#[test]
fn compose_runs_millm_on_a_healthy_postgres_with_volumes() {
    let doc = compose();
    let services = &doc["services"];
    let millm = &services["millm"];
    let postgres = &services["postgres"];
    assert!(
        postgres["image"]
            .as_str()
            .unwrap()
            .starts_with("postgres:16"),
        "{postgres:?}"
    );
    assert_eq!(
        millm["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    for (name, service) in [("millm", millm), ("postgres", postgres)] {
        assert!(
            service["healthcheck"]["test"].is_sequence(),
            "{name} has a healthcheck"
        );
    }
    // Liveness, not readiness: a database outage must not make the container unhealthy.
    let health = format!("{:?}", millm["healthcheck"]["test"]);
    assert!(health.contains("/api/health/live"), "{health}");

    // DATABASE_URL points at the postgres service with the database it creates.
    let url = millm["environment"]["DATABASE_URL"].as_str().unwrap();
    let db = postgres["environment"]["POSTGRES_DB"].as_str().unwrap();
    let user = postgres["environment"]["POSTGRES_USER"].as_str().unwrap();
    assert!(url.starts_with(&format!("postgres://{user}:")), "{url}");
    assert!(url.ends_with(&format!("@postgres:5432/{db}")), "{url}");

    // Named volumes for the model cache and the database, declared at the top level.
    let volumes = doc["volumes"].as_mapping().expect("top-level volumes");
    let mounts = |service: &Value| -> Vec<(String, String)> {
        service["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .map(|v| {
                let (from, to) = v.as_str().unwrap().split_once(':').unwrap();
                (from.to_string(), to.split(':').next().unwrap().to_string())
            })
            .collect()
    };
    let data_dir = millm["environment"]["MILLM_DATA_DIR"].as_str().unwrap();
    let cache_dir = millm["environment"]["MODEL_CACHE_DIR"].as_str().unwrap();
    let millm_mounts = mounts(millm);
    assert!(
        millm_mounts
            .iter()
            .any(|(v, at)| volumes.contains_key(v.as_str())
                && (cache_dir.starts_with(at.as_str()) && data_dir.starts_with(at.as_str()))),
        "a named volume holds MILLM_DATA_DIR and MODEL_CACHE_DIR: {millm_mounts:?}"
    );
    assert!(mounts(postgres)
        .iter()
        .any(|(v, at)| volumes.contains_key(v.as_str()) && at == "/var/lib/postgresql/data"));
}

/// `ENV` names per stage of the Dockerfile, in order.
fn dockerfile_stages() -> Vec<(String, Vec<String>, String)> {
    let text = read("Dockerfile").replace("\\\n", " ");
    let mut stages: Vec<(String, Vec<String>, String)> = Vec::new();
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("FROM") => {
                let name = line
                    .split_whitespace()
                    .skip_while(|w| !w.eq_ignore_ascii_case("AS"))
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                stages.push((name, Vec::new(), String::new()));
            }
            Some("ENV") => {
                let stage = stages.last_mut().expect("ENV after FROM");
                for pair in words {
                    let name = pair.split('=').next().unwrap_or(pair);
                    stage.1.push(name.to_string());
                }
            }
            Some(_) => {
                if let Some(stage) = stages.last_mut() {
                    stage.2.push_str(line);
                    stage.2.push('\n');
                }
            }
            None => {}
        }
    }
    stages
}

#[test]
fn dockerfile_images_set_only_settings_and_check_health() {
    let settings = server_settings();
    let stages = dockerfile_stages();
    let runtimes: Vec<_> = stages
        .iter()
        .filter(|(name, _, _)| name.starts_with("runtime"))
        .collect();
    let names: Vec<&str> = runtimes.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["runtime-cuda", "runtime"],
        "the CPU image is the default (last) target"
    );
    for (name, env, body) in runtimes {
        for var in env {
            assert!(
                settings.contains(var),
                "the Dockerfile's {name} image sets {var}, which `millm serve` does not read"
            );
        }
        for required in ["HOST", "MILLM_DATA_DIR"] {
            assert!(env.iter().any(|v| v == required), "{name} sets {required}");
        }
        assert!(
            body.contains("HEALTHCHECK") && body.contains("/api/health/live"),
            "{name} checks liveness, which never asks the database"
        );
        assert!(
            body.contains("USER millm"),
            "{name} runs as a non-root user"
        );
        assert!(body.contains("VOLUME [\"/data\"]"), "{name}");
    }
    let cuda = &stages
        .iter()
        .find(|(n, _, _)| n == "builder-cuda")
        .expect("a CUDA build stage")
        .2;
    assert!(cuda.contains("--features cuda"));
}

#[test]
fn kubernetes_manifest_sets_only_settings_and_probes_health() {
    let settings = server_settings();
    let text = read("deploy/k8s.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("deploy/k8s.yaml is YAML"))
        .collect();
    let kinds: BTreeSet<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in ["Deployment", "Service", "PersistentVolumeClaim"] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    for c in containers {
        for e in c["env"].as_sequence().into_iter().flatten() {
            let name = e["name"].as_str().unwrap();
            assert!(
                settings.contains(name),
                "deploy/k8s.yaml sets {name}, which `millm serve` does not read"
            );
        }
        // A database outage makes the pod not ready; it never gets it restarted.
        for probe in ["startupProbe", "livenessProbe"] {
            assert_eq!(
                c[probe]["httpGet"]["path"].as_str(),
                Some("/api/health/live"),
                "{probe}"
            );
        }
        // Readiness asks /api/health, which needs the key: an exec probe sends it.
        let ready = serde_yaml_ng::to_string(&c["readinessProbe"]["exec"]).unwrap();
        assert!(
            ready.contains("/api/health") && !ready.contains("/api/health/live"),
            "{ready}"
        );
        assert!(ready.contains("Bearer $MILLM_API_KEY"), "{ready}");
        // Readiness waits longer than the server's 2 s bound on the database ping, so it sees
        // the 503 rather than its own timeout.
        assert!(c["readinessProbe"]["timeoutSeconds"].as_u64().unwrap_or(1) > 2);
        assert!(c["resources"]["limits"].is_mapping());
    }
}

#[test]
fn env_example_names_only_real_settings() {
    let known = all_settings();
    let text = read(".env.example");
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        // `KEY=value` and commented-out `# KEY=value` lines; prose comments have no `=` key.
        let line = line.trim().trim_start_matches('#').trim();
        let Some((key, _)) = line.split_once('=') else {
            continue;
        };
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        assert!(
            known.contains(key),
            ".env.example names {key}, which millm does not read"
        );
        seen.insert(key.to_string());
    }
    // Every server setting is shown there, set or commented out.
    let missing: Vec<_> = server_settings().difference(&seen).cloned().collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    assert!(seen.contains("MILLM_URL"));
}

#[test]
fn compose_publishes_on_loopback_and_needs_the_key() {
    let doc = compose();
    let millm = &doc["services"]["millm"];
    for port in millm["ports"].as_sequence().expect("ports") {
        let port = port.as_str().expect("a port string");
        assert!(
            port.starts_with("${MILLM_BIND:-127.0.0.1}:"),
            "published on loopback unless MILLM_BIND says otherwise: {port}"
        );
    }
    let key = millm["environment"]["MILLM_API_KEY"]
        .as_str()
        .expect("MILLM_API_KEY is set");
    assert!(
        key.starts_with("${MILLM_API_KEY:?"),
        "compose refuses to start without a key: {key}"
    );
    assert_eq!(millm["environment"]["HOST"].as_str(), Some("0.0.0.0"));
}

#[test]
fn kubernetes_takes_the_key_from_a_secret_and_admits_only_labelled_clients() {
    let text = read("deploy/k8s.yaml");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("deploy/k8s.yaml is YAML"))
        .collect();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let key = env
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "MILLM_API_KEY")
        .expect("the key is set");
    let secret = &key["valueFrom"]["secretKeyRef"];
    assert_eq!(secret["name"].as_str(), Some("millm"));
    assert_ne!(
        secret["optional"].as_bool(),
        Some(true),
        "the pod must not start without the key"
    );
    let policy = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("a NetworkPolicy example");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some("millm")
    );
    assert!(policy["spec"]["ingress"][0]["from"].is_sequence());
}
