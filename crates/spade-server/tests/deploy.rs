//! The Dockerfile and Kubernetes manifests only use flags, environment variables, ports and
//! paths that the server really has.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Dockerfile and the server's manifests (`deploy/training` runs the trainer instead).
fn deploy_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("Dockerfile")];
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.ends_with("deploy/training") {
                continue;
            } else if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 5, "deploy files found: {files:?}");
    files
}

fn server_help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spade-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Every `SPADE_*` name in a file (env keys, ConfigMap keys, generator literals).
fn env_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("SPADE_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

#[test]
fn every_environment_variable_is_one_the_server_reads() {
    let help = server_help();
    let mut seen = BTreeSet::new();
    for file in deploy_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in env_names(&text) {
            assert!(
                help.contains(&format!("env: {name}")) || help.contains(&format!("env: {name}=")),
                "{}: `{name}` is not a spade-server variable",
                file.display()
            );
            seen.insert(name);
        }
    }
    assert!(
        seen.contains("SPADE_MODELS") && seen.contains("SPADE_LISTEN"),
        "{seen:?}"
    );
}

#[test]
fn ports_and_probe_paths_match_the_server() {
    let openapi = std::fs::read_to_string(root().join("openapi.yaml")).unwrap();
    for file in deploy_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().map(str::trim) {
            if let Some(path) = line.strip_prefix("path: /") {
                assert!(
                    openapi.contains(&format!("  /{path}:")),
                    "{}: probe path /{path} is not served",
                    file.display()
                );
            }
            if let Some(port) = line.strip_prefix("containerPort: ") {
                assert_eq!(port, "8080", "{}", file.display());
            }
            if let Some(listen) = line
                .strip_prefix("SPADE_LISTEN: ")
                .or_else(|| line.strip_prefix("SPADE_LISTEN="))
            {
                assert!(
                    listen.trim_matches('"').ends_with(":8080"),
                    "{}: {listen}",
                    file.display()
                );
            }
            if line.starts_with("EXPOSE ") {
                assert_eq!(line, "EXPOSE 8080");
            }
        }
    }
}

#[test]
fn the_image_runs_the_binaries_the_workspace_builds() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    for binary in ["spade-server", "spade"] {
        assert!(
            dockerfile.contains(&format!("target/release/{binary} "))
                || dockerfile.contains(&format!("target/release/{binary}\n"))
                || dockerfile.contains(&format!("target/release/{binary} /out")),
            "{binary}"
        );
    }
    let cli = std::fs::read_to_string(root().join("crates/spade-cli/Cargo.toml")).unwrap();
    assert!(cli.contains("name = \"spade\""));
    for package in ["spade-model", "spade-cli", "spade-server"] {
        assert!(
            dockerfile.contains(&format!("crates/{package}/Cargo.toml")),
            "{package} manifest is copied for the dependency layer"
        );
        let manifest =
            std::fs::read_to_string(root().join(format!("crates/{package}/Cargo.toml"))).unwrap();
        if package != "spade-model" {
            assert!(
                manifest.contains("cuda = "),
                "{package} has the cuda feature the CUDA image builds with"
            );
        }
    }
}
