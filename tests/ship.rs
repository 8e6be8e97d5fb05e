//! The Kubernetes manifests in `cronjobs/`, read as YAML and checked against what the jobs need
//! and against the real `dwh` binary: schedules, concurrency, deadlines and limits, where every
//! setting comes from (secrets only from the Secret, never from the ConfigMap), and that every
//! subcommand, flag and environment variable a manifest uses is one `dwh --help` documents.
//! (Schema validation against the Kubernetes API is scripts/lint's job.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

fn cronjobs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../cronjobs")
}

/// Every YAML file under `cronjobs/`, relative path → its documents.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![cronjobs_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("cronjobs/ is readable") {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let docs: Vec<Value> = serde_norway::Deserializer::from_str(&text)
                    .map(|doc| Value::deserialize(doc).expect("valid YAML"))
                    .collect();
                let rel = path.strip_prefix(cronjobs_dir()).unwrap();
                out.insert(rel.to_string_lossy().into_owned(), docs);
            }
        }
    }
    out
}

/// The Kubernetes objects (not the kustomizations), by `kind/name`.
fn objects() -> BTreeMap<String, Value> {
    manifests()
        .into_iter()
        .filter(|(path, _)| !path.ends_with("kustomization.yaml"))
        .flat_map(|(_, docs)| docs)
        .map(|doc| {
            let key = format!("{}/{}", s(&doc["kind"]), s(&doc["metadata"]["name"]));
            (key, doc)
        })
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn i(v: &Value) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("expected a number, got {v:?}"))
}

/// `dwh <args> --help`, run with secrets in its environment (as in a pod).
fn dwh_help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dwh"))
        .args(args)
        .arg("--help")
        .env_clear()
        .env("DWH_PG_URL", "postgres://dwh:pg-s3cret@db/dwh")
        .env("DWH_REDIS_URL", "rediss://:redis-s3cret@cache:6380")
        .env("DWH_KAFKA_SASL_PASSWORD", "kafka-s3cret")
        .output()
        .expect("the dwh binary runs");
    assert!(out.status.success(), "dwh {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The Job spec of a CronJob or Job.
fn job_spec(object: &Value) -> &Value {
    match s(&object["kind"]) {
        "CronJob" => &object["spec"]["jobTemplate"]["spec"],
        "Job" => &object["spec"],
        other => panic!("not a job: {other}"),
    }
}

fn container(object: &Value) -> &Value {
    let containers = job_spec(object)["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    &containers[0]
}

const SECRET_VARS: [&str; 6] = [
    "DWH_PG_URL",
    "DWH_REDIS_URL",
    "DWH_KAFKA_SASL_USERNAME",
    "DWH_KAFKA_SASL_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

#[test]
fn every_manifest_is_in_a_kustomization() {
    let all = manifests();
    let mut listed = BTreeSet::new();
    for (path, docs) in &all {
        if !path.ends_with("kustomization.yaml") {
            continue;
        }
        let dir = Path::new(path).parent().unwrap();
        for resource in docs[0]["resources"].as_sequence().unwrap() {
            let file = dir.join(s(resource));
            listed.insert(file.to_string_lossy().into_owned());
        }
        // The image name every manifest uses is replaced here, once per kustomization.
        assert_eq!(s(&docs[0]["images"][0]["name"]), "dwh", "{path}");
    }
    for path in all.keys().filter(|p| !p.ends_with("kustomization.yaml")) {
        assert!(listed.contains(path), "{path} is in no kustomization.yaml");
    }
    assert!(listed.contains("setup"), "cronjobs/ includes setup/");
}

#[test]
fn the_minute_jobs_run_every_minute_one_at_a_time_within_deadlines_and_limits() {
    let objects = objects();
    for job in ["stg", "dds", "cdm"] {
        let cron = &objects[&format!("CronJob/dwh-{job}")];
        let spec = &cron["spec"];
        assert_eq!(s(&spec["schedule"]), "* * * * *", "{job}");
        assert_eq!(s(&spec["concurrencyPolicy"]), "Forbid", "{job}");
        assert_eq!(spec["suspend"].as_bool(), Some(false), "{job}");
        let starting = i(&spec["startingDeadlineSeconds"]);
        assert!(
            (10..60).contains(&starting),
            "{job}: a missed minute is skipped, not piled up"
        );
        assert!(i(&spec["successfulJobsHistoryLimit"]) >= 1, "{job}");
        assert!(i(&spec["failedJobsHistoryLimit"]) >= 1, "{job}");
        let js = job_spec(cron);
        let deadline = i(&js["activeDeadlineSeconds"]);
        // A run may read for up to DWH_FETCH_TIMEOUT_SECS (60) and wait for the lock.
        assert!(
            (120..=900).contains(&deadline),
            "{job}: deadline {deadline}"
        );
        assert!((0..=3).contains(&i(&js["backoffLimit"])), "{job}");
        assert_eq!(s(&container(cron)["args"][0]), job);
    }
}

#[test]
fn every_pod_is_non_root_read_only_bounded_and_judged_by_exit_code() {
    for (key, object) in objects() {
        if !["CronJob", "Job"].contains(&s(&object["kind"])) {
            continue;
        }
        let js = job_spec(&object);
        let pod = &js["template"]["spec"];
        assert_eq!(s(&pod["restartPolicy"]), "Never", "{key}");
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        let c = container(&object);
        assert_eq!(
            s(&c["image"]),
            "dwh",
            "{key}: the kustomization sets the image"
        );
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{key}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{key}"
        );
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !c["resources"][kind][resource].is_null(),
                    "{key}: {kind}.{resource}"
                );
            }
        }
        // Exit code 2 is a bad flag or setting: fail the Job instead of retrying.
        let rule = &js["podFailurePolicy"]["rules"][0];
        assert_eq!(s(&rule["action"]), "FailJob", "{key}");
        assert_eq!(i(&rule["onExitCodes"]["values"][0]), 2, "{key}");
        assert!(js["activeDeadlineSeconds"].as_i64().is_some(), "{key}");
        assert!(js["backoffLimit"].as_i64().is_some(), "{key}");
    }
}

#[test]
fn backfill_templates_are_suspended_and_run_real_commands() {
    let objects = objects();
    let cdm_full = &objects["CronJob/dwh-backfill-cdm-full"];
    assert_eq!(cdm_full["spec"]["suspend"].as_bool(), Some(true));
    let args: Vec<&str> = container(cdm_full)["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(s)
        .collect();
    assert_eq!(args, ["cdm", "--full"]);
    let catchup = &objects["CronJob/dwh-backfill-stg-catchup"];
    assert_eq!(catchup["spec"]["suspend"].as_bool(), Some(true));
    assert_eq!(s(&container(catchup)["args"][0]), "stg");
    let migrate = &objects["Job/dwh-migrate"];
    assert_eq!(s(&container(migrate)["args"][0]), "migrate");
}

#[test]
fn secrets_come_only_from_the_secret_and_settings_from_the_config_map() {
    let objects = objects();
    let config = &objects["ConfigMap/dwh-config"]["data"];
    for (key, value) in config.as_mapping().unwrap() {
        let (key, value) = (s(key), s(value));
        assert!(
            !SECRET_VARS.contains(&key),
            "{key} is a secret, not a setting"
        );
        assert!(
            !key.contains("PASSWORD") && !value.contains('@'),
            "{key}={value}"
        );
    }
    for (key, object) in &objects {
        if !["CronJob", "Job"].contains(&s(&object["kind"])) {
            continue;
        }
        let c = container(object);
        assert_eq!(s(&c["envFrom"][0]["configMapRef"]["name"]), "dwh-config");
        for var in c["env"].as_sequence().unwrap() {
            let name = s(&var["name"]);
            if SECRET_VARS.contains(&name) {
                let secret = &var["valueFrom"]["secretKeyRef"];
                assert_eq!(s(&secret["name"]), "dwh-secrets", "{key} {name}");
                assert!(var["value"].is_null(), "{key}: {name} has a literal value");
            } else if !var["valueFrom"].is_null() {
                // A setting taken from one key of the ConfigMap (e.g. the archive URL).
                let setting = &var["valueFrom"]["configMapKeyRef"];
                assert_eq!(s(&setting["name"]), "dwh-config", "{key}: {name}");
                assert!(!config[s(&setting["key"])].is_null(), "{key}: {name}");
            }
        }
        let ca = job_spec(object)["template"]["spec"]["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| s(&v["name"]) == "ca")
            .expect("the CA volume");
        assert_eq!(s(&ca["secret"]["secretName"]), "dwh-ca", "{key}");
    }
    // The CA files the ConfigMap names are where the dwh-ca Secret is mounted.
    for var in ["DWH_PG_CA_FILE", "DWH_REDIS_CA_FILE", "DWH_KAFKA_CA_FILE"] {
        assert!(s(&config[var]).starts_with("/etc/dwh/ca/"), "{var}");
    }
}

#[test]
fn each_job_logs_in_to_postgresql_as_its_own_role() {
    // The role a subcommand's PostgreSQL user must be a member of (sql/V0008__job_roles.sql);
    // migrate runs as the owner of the schema.
    let key_of = |command: &str| match command {
        "stg" | "snapshot" | "backfill" => "pg-url-stg",
        "dds" => "pg-url-dds",
        "cdm" => "pg-url-cdm",
        "migrate" => "pg-url",
        other => panic!("which PostgreSQL user runs {other}?"),
    };
    for (key, object) in objects() {
        if !["CronJob", "Job"].contains(&s(&object["kind"])) {
            continue;
        }
        let c = container(&object);
        let url = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| s(&v["name"]) == "DWH_PG_URL")
            .unwrap_or_else(|| panic!("{key}: no DWH_PG_URL"));
        let command = s(&c["args"][0]);
        assert_eq!(
            s(&url["valueFrom"]["secretKeyRef"]["key"]),
            key_of(command),
            "{key} runs {command}"
        );
    }
}

#[test]
fn every_command_flag_and_env_var_the_manifests_use_is_in_dwh_help() {
    let objects = objects();
    let top = dwh_help(&[]);
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let config_vars: Vec<String> = objects["ConfigMap/dwh-config"]["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| s(k).to_owned())
        .collect();
    let mut documented_anywhere = top.clone();
    for (key, object) in &objects {
        if !["CronJob", "Job"].contains(&s(&object["kind"])) {
            continue;
        }
        let c = container(object);
        let args: Vec<&str> = c["args"].as_sequence().unwrap().iter().map(s).collect();
        let command = args[0];
        assert!(
            top.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{key}: `{command}` is not a dwh subcommand"
        );
        let help = helps
            .entry(command.to_owned())
            .or_insert_with(|| dwh_help(&[command]));
        for flag in args[1..].iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{key}: `dwh {command}` has no {flag}"
            );
        }
        // Every variable set on the container is one its own command reads.
        for var in c["env"].as_sequence().unwrap() {
            let name = s(&var["name"]);
            assert!(
                help.contains(&format!("[env: {name}")) || top.contains(name),
                "{key}: `dwh {command} --help` does not know {name}"
            );
        }
        documented_anywhere.push_str(help);
    }
    // The shared settings are read by some command each (or are the logging variables).
    for name in &config_vars {
        assert!(
            documented_anywhere.contains(&format!("[env: {name}")) || top.contains(name.as_str()),
            "ConfigMap key {name} is no dwh environment variable"
        );
    }
    // And --help shows no secret's value.
    for help in helps.values().chain([&top]) {
        assert!(!help.contains("s3cret"), "{help}");
    }
    assert!(helps["stg"].contains("[env: DWH_KAFKA_SASL_PASSWORD]"));
}

/// The runtime image (distroless cc-debian12) has glibc, libgcc and OpenSSL 3 and nothing else:
/// the binary must need no other shared library (librdkafka and zlib are linked in).
#[test]
fn the_binary_needs_only_what_the_runtime_image_has() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_dwh"))
        .output()
        .expect("ldd runs");
    assert!(out.status.success());
    let runtime = [
        "linux-vdso.so.1",
        "libgcc_s.so.1",
        "libm.so.6",
        "libc.so.6",
        "libssl.so.3",
        "libcrypto.so.3",
    ];
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let lib = line.split_whitespace().next().unwrap();
        assert!(
            runtime.contains(&lib) || lib.contains("/ld-linux"),
            "dwh needs {lib}, which gcr.io/distroless/cc-debian12 does not have"
        );
    }
}
