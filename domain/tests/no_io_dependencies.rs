//! The hexagon is a crate boundary: the domain's normal dependencies stay
//! tiny. This reads `cargo tree` so a new IO dependency fails the build.

use std::process::Command;

const ALLOWED: [&str; 6] = [
    "bus-docker-domain",
    "thiserror",
    "thiserror-impl",
    "futures-core",
    "proc-macro2",
    "quote",
];

#[test]
fn domain_has_no_io_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "bus-docker-domain",
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
    let unexpected: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            !ALLOWED.contains(name) && !name.starts_with("unicode-ident") && *name != "syn"
        })
        .collect();
    assert!(unexpected.is_empty(), "domain depends on {unexpected:?}");
}
