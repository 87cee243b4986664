//! The service is the inside of the hexagon's wiring: it reaches the world
//! only through the domain's ports. This reads `cargo tree` so that a
//! dependency on an adapter crate, or on a library that only an adapter
//! should need (the Docker, HTTP or configuration stacks), fails the build.

use std::process::Command;

/// Crates that would mean the service talks to the world directly.
const FORBIDDEN: [&str; 12] = [
    "bus-docker-engine",
    "bus-docker-events",
    "bus-docker-static",
    "bus-events-client",
    "bus-events-local",
    "bus-host-mounts",
    "bus-integration-docker",
    "bollard",
    "reqwest",
    "hyper",
    "axum",
    "figment",
];

#[test]
fn service_depends_on_no_adapter() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "bus-docker-service",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"bus-docker-domain"),
        "the tree should list the domain: {tree}"
    );
    let found: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| FORBIDDEN.contains(n))
        .collect();
    assert!(found.is_empty(), "the service depends on {found:?}");
}
