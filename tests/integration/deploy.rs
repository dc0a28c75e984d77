//! What can be checked of `deploy/` and `otel/` without a container engine:
//! every file parses, and names, ports, paths and variables agree with the
//! code and with each other.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use artifactapi::{config, settings::VARIABLES};
use artifactapi_layers::format::options::RegistryHosts;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            value.apply_merge().unwrap();
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn manifests() -> Vec<(PathBuf, Value)> {
    let dir = root().join("deploy/kubernetes");
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    paths.sort();
    let manifest =
        |p: &PathBuf| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml");
    for path in paths.into_iter().filter(manifest) {
        for doc in documents(&path) {
            out.push((path.clone(), doc));
        }
    }
    out
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str().unwrap_or_else(|| panic!("no string at {path:?}"))
}

fn find<'a>(docs: &'a [(PathBuf, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_kubernetes_manifest_parses_and_names_itself() {
    let docs = manifests();
    assert!(docs.len() >= 12, "{}", docs.len());
    for (path, doc) in &docs {
        assert!(doc["apiVersion"].is_string() && doc["kind"].is_string(), "{}", path.display());
        assert!(doc["metadata"]["name"].is_string(), "{}", path.display());
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "artifact-storage", "{}", path.display());
        }
    }
}

#[test]
fn the_deployment_agrees_with_the_code_and_the_other_manifests() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "artifactapi");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    let labels = &pod["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    let container = &pod["spec"]["containers"][0];

    // Port: LISTEN_ADDR, containerPort and the Service agree.
    let env: BTreeMap<String, &Value> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e))
        .collect();
    let listen = env["LISTEN_ADDR"]["value"].as_str().unwrap();
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(container["ports"][0]["containerPort"].as_u64(), Some(port));
    let service = find(&docs, "Service", "artifactapi");
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], container["ports"][0]["name"]);

    // Probes hit the endpoints the code serves.
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert!(container["resources"]["requests"].is_mapping() && container["resources"]["limits"].is_mapping());
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

    // Every variable is one artifactapi reads, or a ${VAR} the remotes name.
    let configmap = find(&docs, "ConfigMap", "artifactapi-remotes");
    let remotes_yaml = configmap["data"]["remotes.yaml"].as_str().unwrap();
    let referenced: BTreeSet<String> =
        remotes_yaml.split("${").skip(1).map(|rest| rest.split('}').next().unwrap().to_owned()).collect();
    for name in env.keys() {
        let known =
            VARIABLES.contains(&name.as_str()) || referenced.contains(name) || name.starts_with("OTEL_");
        assert!(known, "{name} is not a variable artifactapi reads");
    }
    for name in &referenced {
        assert!(env.contains_key(name), "remotes.yaml names ${{{name}}} but the Deployment does not set it");
    }
    // The ConfigMap's remotes.yaml is valid, with those variables set.
    let config =
        config::parse_with_env(remotes_yaml, &|name: &str| referenced.contains(name).then(|| "x".into()))
            .unwrap_or_else(|e| panic!("the ConfigMap's remotes.yaml: {e}"));
    assert!(config.remotes.get("dockerhub").is_some_and(|r| RegistryHosts::answers_for(r, "docker.io")));

    // Secrets referenced exist with those keys.
    let secret = find(&docs, "Secret", "artifactapi-secrets");
    for (path, doc) in &docs {
        for reference in secret_refs(doc) {
            assert_eq!(reference.0, "artifactapi-secrets", "{}", path.display());
            assert!(
                secret["stringData"][reference.1.as_str()].is_string(),
                "{}: {}",
                path.display(),
                reference.1
            );
        }
    }

    // The config is mounted where CONFIG_PATH says, from the ConfigMap; DATA_DIR is a volume.
    let mounts = container["volumeMounts"].as_sequence().unwrap();
    let config_path = env["CONFIG_PATH"]["value"].as_str().unwrap();
    let config_mount =
        mounts.iter().find(|m| m["mountPath"] == config_path).expect("remotes.yaml is mounted");
    let volume = |name: &Value| {
        pod["spec"]["volumes"].as_sequence().unwrap().iter().find(|v| &v["name"] == name).cloned().unwrap()
    };
    assert_eq!(volume(&config_mount["name"])["configMap"]["name"], "artifactapi-remotes");
    assert_eq!(config_mount["subPath"], "remotes.yaml");
    let data_dir = env["DATA_DIR"]["value"].as_str().unwrap();
    assert!(mounts.iter().any(|m| m["mountPath"] == data_dir), "DATA_DIR is writable");

    // Backend hosts name Services that exist, on their ports.
    for (host_var, port_var, service) in
        [("DBHOST", Some("DBPORT"), "postgres"), ("REDIS_URL", None, "redis")]
    {
        assert!(env[host_var]["value"].as_str().unwrap().contains(service));
        let svc = find(&docs, "Service", service);
        if let Some(port_var) = port_var {
            assert_eq!(
                svc["spec"]["ports"][0]["port"].as_u64().unwrap().to_string(),
                env[port_var]["value"].as_str().unwrap()
            );
        }
    }
    assert_eq!(env["MINIO_ENDPOINT"]["value"], "minio:9000");
    assert_eq!(find(&docs, "Service", "minio")["spec"]["ports"][0]["port"], 9000);
}

fn secret_refs(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match v {
        Value::Mapping(m) => {
            if let Some(r) = m.get("secretKeyRef") {
                out.push((r["name"].as_str().unwrap().to_owned(), r["key"].as_str().unwrap().to_owned()));
            }
            for value in m.values() {
                out.extend(secret_refs(value));
            }
        }
        Value::Sequence(s) => s.iter().for_each(|x| out.extend(secret_refs(x))),
        _ => {}
    }
    out
}

#[test]
fn the_kustomization_lists_existing_files() {
    let path = root().join("deploy/kubernetes/kustomization.yaml");
    let doc = &documents(&path)[0];
    let listed: Vec<&str> =
        doc["resources"].as_sequence().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    for file in &listed {
        assert!(root().join("deploy/kubernetes").join(file).exists(), "{file}");
    }
    for core in [
        "namespace.yaml",
        "configmap.yaml",
        "secret.yaml",
        "artifactapi.yaml",
        "postgres.yaml",
        "redis.yaml",
        "minio.yaml",
    ] {
        assert!(listed.contains(&core), "{core}");
    }
}

#[test]
fn the_image_build_refers_only_to_files_that_exist() {
    let text = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let mut stages = 0;
    let mut workdir = String::new();
    let mut user = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stages += 1;
        }
        if let Some(rest) = line.strip_prefix("COPY ") {
            if rest.starts_with("--from") {
                continue;
            }
            let parts: Vec<&str> = rest.split_whitespace().collect();
            for source in &parts[..parts.len() - 1] {
                assert!(root().join(source).exists(), "COPY {source}: no such file in the repository");
            }
        }
        if let Some(dir) = line.strip_prefix("WORKDIR ") {
            workdir = dir.to_owned();
        }
        if let Some(u) = line.strip_prefix("USER ") {
            user = u.to_owned();
        }
    }
    assert!(stages >= 2, "a multi-stage build");
    assert_eq!(workdir, "/app", "the image runs from /app (the seed's /app/remotes.yaml)");
    assert!(!user.is_empty() && user != "root" && user != "0", "runs as a non-root user");
    assert!(text.contains("--bin artifactapi"));
    for name in text.lines().filter_map(|l| l.trim().strip_prefix("ENV ")).flat_map(|l| l.split_whitespace())
    {
        if let Some((key, _)) = name.split_once('=') {
            assert!(VARIABLES.contains(&key), "ENV {key}");
        }
    }
}

#[test]
fn the_compose_files_parse_and_agree_with_the_code() {
    let docs = documents(&root().join("deploy/compose.yaml"));
    let services = docs[0]["services"].as_mapping().unwrap();
    for name in ["artifactapi-a", "artifactapi-b", "postgres", "redis", "minio"] {
        assert!(services.contains_key(name), "{name}");
    }
    for replica in ["artifactapi-a", "artifactapi-b"] {
        let service = &docs[0]["services"][replica];
        assert_eq!(service["build"]["dockerfile"], "deploy/Dockerfile");
        let env = service["environment"].as_mapping().unwrap();
        for key in env.keys() {
            assert!(VARIABLES.contains(&key.as_str().unwrap()), "{replica}: {key:?}");
        }
        assert_eq!(service["environment"]["DBHOST"], "postgres");
        assert_eq!(service["environment"]["MINIO_ENDPOINT"], "minio:9000");
        let mount = service["volumes"][0].as_str().unwrap();
        let (source, target) = mount.split_once(':').unwrap();
        assert!(root().join("deploy").join(source).exists(), "{source}");
        assert!(target.starts_with("/app/remotes.yaml"));
    }
    assert_eq!(
        docs[0]["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"],
        docs[0]["services"]["artifactapi-a"]["environment"]["DBPASS"]
    );

    let otel = documents(&root().join("otel/compose.yaml"));
    let collector = &otel[0]["services"]["otel-collector"];
    let mount = collector["volumes"][0].as_str().unwrap();
    assert!(root().join("otel").join(mount.split(':').next().unwrap()).exists());
    let config = documents(&root().join("otel/collector.yaml"));
    assert_eq!(config[0]["service"]["pipelines"]["traces"]["receivers"][0], "otlp");
    let http = str_at(&config[0], &["receivers", "otlp", "protocols", "http", "endpoint"]);
    assert!(http.ends_with(":4318"), "the OTLP/HTTP port artifactapi sends to");
}

#[test]
fn the_registry_mirror_examples_parse() {
    let dir = root().join("deploy/registry-mirrors");
    let rke2 = documents(&dir.join("registries.yaml"));
    let rewrite = rke2[0]["mirrors"]["docker.io"]["rewrite"]["^(.*)$"].as_str().unwrap();
    let remote = rewrite.split('/').next().unwrap();
    // The rewrite targets name docker remotes of the example configuration.
    let example =
        config::parse_with_env(&std::fs::read_to_string(root().join("remotes.yaml")).unwrap(), &|_| {
            Some("x".into())
        })
        .unwrap();
    assert!(example.remotes.get(remote).is_some(), "{remote}");
    for registry in ["docker.io", "ghcr.io"] {
        let text =
            std::fs::read_to_string(dir.join(format!("containerd/certs.d/{registry}/hosts.toml"))).unwrap();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let table = line.starts_with("[host.\"") && line.ends_with("\"]");
            let pair = line.split_once(" = ").is_some_and(|(k, v)| {
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && (v.starts_with('"') && v.ends_with('"') || v.starts_with('[') && v.ends_with(']'))
            });
            assert!(table || pair, "{registry}/hosts.toml: {line}");
        }
        // containerd's ns for this registry finds a remote of the example configuration.
        assert!(example.remotes.iter().any(|r| RegistryHosts::answers_for(r, registry)), "{registry}");
    }
}
