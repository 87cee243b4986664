//! Real mounts (the tests run as root, as the worker does): what a pin
//! shows after its source path was swapped, what is refused, the flags,
//! release and sweep.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_host_mounts::{HostMounts, Kind, PinError};
use rustix::fs::StatVfsMountFlags;

/// An allowed root, an outside dir and a staging root, in separate temp
/// dirs; pins are released on drop so a failing test leaves no mounts.
struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    root: PathBuf,
    outside: PathBuf,
    staging: PathBuf,
    pins: HostMounts,
    runs: std::cell::RefCell<Vec<String>>,
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().canonicalize().unwrap();
    (dir, path)
}

impl Fixture {
    fn new() -> Self {
        let (a, root) = tempdir();
        let (b, outside) = tempdir();
        let (c, staging_parent) = tempdir();
        std::fs::write(outside.join("marker"), "outside").unwrap();
        let staging = staging_parent.join("mounts").join("runner");
        let pins = HostMounts::new(&staging, std::slice::from_ref(&root), Vec::new()).unwrap();
        Self {
            _dirs: vec![a, b, c],
            root,
            outside,
            staging,
            pins,
            runs: Default::default(),
        }
    }

    fn dir(&self, rel: &str, marker: &str) -> PathBuf {
        let path = self.root.join(rel);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("marker"), marker).unwrap();
        path
    }

    fn pin(&self, run: &str, source: &Path, read_only: bool) -> Result<PathBuf, PinError> {
        self.runs.borrow_mut().push(run.to_owned());
        self.pins
            .pin(run, 0, source, &self.root, read_only)
            .map(|p| p.path().to_owned())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for run in self.runs.borrow().iter() {
            let _ = self.pins.release(run);
        }
    }
}

fn mounted(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = format!(" {} ", path.display());
    table.lines().any(|l| l.contains(&needle))
}

fn flags(path: &Path) -> StatVfsMountFlags {
    rustix::fs::statvfs(path).unwrap().f_flag
}

#[test]
fn a_pin_keeps_showing_the_checked_dir_after_a_swap() {
    let fx = Fixture::new();
    let work = fx.dir("work/sub", "inside");
    let staged = fx.pin("run-swap", &work, false).unwrap();
    assert!(staged.starts_with(&fx.staging));
    std::fs::rename(&work, fx.root.join("work/moved")).unwrap();
    std::os::unix::fs::symlink(&fx.outside, &work).unwrap();
    // The path now leads outside; the pin still shows what was checked.
    assert_eq!(
        std::fs::read_to_string(work.join("marker")).unwrap(),
        "outside"
    );
    assert_eq!(
        std::fs::read_to_string(staged.join("marker")).unwrap(),
        "inside"
    );
    fx.pins.release("run-swap").unwrap();
    assert!(!mounted(&staged));
    assert!(!staged.exists());
    assert!(!fx.staging.join("run-swap").exists());
    // The source is untouched by the release.
    assert!(fx.root.join("work/moved/marker").exists());
    fx.pins.release("run-swap").unwrap();
}

#[test]
fn a_symlink_anywhere_on_the_path_is_refused() {
    let fx = Fixture::new();
    let sub = fx.dir("a/b", "inside");
    std::fs::create_dir(fx.outside.join("b")).unwrap();
    // The last component swapped after the check.
    std::fs::rename(&sub, fx.root.join("a/b-old")).unwrap();
    std::os::unix::fs::symlink(fx.outside.join("b"), &sub).unwrap();
    let err = fx.pin("run-last", &sub, true).unwrap_err();
    assert!(matches!(err, PinError::Symlink { .. }), "{err}");
    // A middle component swapped.
    let deep = fx.dir("c/d", "inside");
    std::fs::rename(fx.root.join("c"), fx.root.join("c-old")).unwrap();
    std::os::unix::fs::symlink(&fx.outside, fx.root.join("c")).unwrap();
    std::fs::create_dir(fx.outside.join("d")).unwrap();
    let err = fx.pin("run-middle", &deep, true).unwrap_err();
    assert!(matches!(err, PinError::Symlink { .. }), "{err}");
    assert!(err.is_refusal());
    // Nothing was left in the staging root.
    assert_eq!(std::fs::read_dir(&fx.staging).unwrap().count(), 0);
}

#[test]
fn a_hard_link_to_a_protected_socket_is_refused() {
    let (_d, sockets) = tempdir();
    let engine = sockets.join("engine.sock");
    let _listener = UnixListener::bind(&engine).unwrap();
    let (_r, root) = tempdir();
    let (_s, staging) = tempdir();
    let pins = HostMounts::new(
        staging.join("x"),
        std::slice::from_ref(&root),
        vec![engine.clone()],
    )
    .unwrap();
    let link = root.join("innocent");
    std::fs::hard_link(&engine, &link).unwrap();
    assert_eq!(bus_host_mounts::identity(&link).unwrap().kind, Kind::Socket);
    let err = pins.pin("run-sock", 0, &link, &root, true).unwrap_err();
    assert!(matches!(err, PinError::Protected { .. }), "{err}");
    // Another socket in the root is not the engine's.
    let other = root.join("other.sock");
    let _other = UnixListener::bind(&other).unwrap();
    let pin = pins.pin("run-sock", 1, &other, &root, true).unwrap();
    assert_eq!(pin.identity().kind, Kind::Socket);
    pins.release("run-sock").unwrap();
}

#[test]
fn pins_are_nosuid_nodev_and_read_only_when_asked() {
    let fx = Fixture::new();
    let work = fx.dir("w", "inside");
    let ro = fx.pin("run-ro", &work, true).unwrap();
    let f = flags(&ro);
    assert!(
        f.contains(
            StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV | StatVfsMountFlags::RDONLY
        ),
        "{f:?}"
    );
    assert!(std::fs::write(ro.join("new"), "x").is_err());
    let rw = fx.pin("run-rw", &work, false).unwrap();
    let f = flags(&rw);
    assert!(
        f.contains(StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV),
        "{f:?}"
    );
    assert!(!f.contains(StatVfsMountFlags::RDONLY));
    std::fs::write(rw.join("new"), "written").unwrap();
    assert_eq!(
        std::fs::read_to_string(work.join("new")).unwrap(),
        "written"
    );
    // The source's own mount keeps its flags.
    assert!(!flags(&work).contains(StatVfsMountFlags::NOSUID));
}

#[test]
fn a_file_source_is_pinned_onto_a_file() {
    let fx = Fixture::new();
    let file = fx.root.join("config.toml");
    std::fs::write(&file, "inside").unwrap();
    let staged = fx.pin("run-file", &file, true).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::os::unix::fs::symlink(fx.outside.join("marker"), &file).unwrap();
    assert_eq!(std::fs::read_to_string(&staged).unwrap(), "inside");
    fx.pins.release("run-file").unwrap();
    assert!(!staged.exists());
}

#[test]
fn unpin_undoes_one_attempt_only() {
    let fx = Fixture::new();
    let work = fx.dir("w", "inside");
    fx.runs.borrow_mut().push("dup".into());
    let winner = fx.pins.pin("dup", 0, &work, &fx.root, true).unwrap();
    let loser = fx.pins.pin("dup", 0, &work, &fx.root, true).unwrap();
    assert_ne!(winner.path(), loser.path());
    fx.pins.unpin(&loser).unwrap();
    assert!(!loser.path().exists());
    assert_eq!(
        std::fs::read_to_string(winner.path().join("marker")).unwrap(),
        "inside"
    );
}

#[test]
fn sweep_releases_runs_whose_containers_are_gone() {
    let fx = Fixture::new();
    let work = fx.dir("w", "inside");
    let kept = fx.pin("kept", &work, true).unwrap();
    let gone = fx.pin("gone", &work, true).unwrap();
    // This process holds both: nothing is swept.
    assert_eq!(
        fx.pins.sweep_older_than(|_| false, Duration::ZERO).unwrap(),
        0
    );
    // A restarted worker on the same staging root.
    let later = HostMounts::new(&fx.staging, std::slice::from_ref(&fx.root), Vec::new()).unwrap();
    // Young entries may belong to a worker between pin and create.
    assert_eq!(later.sweep(|run| run == "kept").unwrap(), 0);
    assert!(mounted(&gone));
    assert_eq!(
        later
            .sweep_older_than(|run| run == "kept", Duration::ZERO)
            .unwrap(),
        1
    );
    assert!(!mounted(&gone) && !gone.exists());
    assert!(mounted(&kept));
    assert_eq!(
        std::fs::read_to_string(kept.join("marker")).unwrap(),
        "inside"
    );
}

#[test]
fn the_probe_mounts_and_cleans_up() {
    let fx = Fixture::new();
    fx.pins.probe().unwrap();
    assert_eq!(std::fs::read_dir(&fx.staging).unwrap().count(), 0);
}

#[test]
fn a_staging_root_a_container_could_reach_is_refused() {
    let (_r, root) = tempdir();
    let err = HostMounts::new(
        root.join("staging"),
        std::slice::from_ref(&root),
        Vec::new(),
    )
    .unwrap_err();
    assert!(matches!(err, PinError::StagingReachable { .. }), "{err}");
    let (_s, staging) = tempdir();
    let pins = HostMounts::new(&staging, &[], Vec::new()).unwrap();
    // A mount admitted under a root that contains the staging root.
    let err = pins
        .pin("r", 0, &staging, staging.parent().unwrap(), true)
        .unwrap_err();
    assert!(matches!(err, PinError::StagingReachable { .. }), "{err}");
    assert!(matches!(
        HostMounts::new("relative/dir", &[], Vec::new()),
        Err(PinError::StagingUnsafe { .. })
    ));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&staging).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn run_ids_that_could_leave_the_staging_root_are_refused() {
    let fx = Fixture::new();
    let work = fx.dir("w", "inside");
    for bad in ["..", ".", "", "a/b", "probe@1"] {
        assert!(
            matches!(fx.pin(bad, &work, true), Err(PinError::RunId(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn a_source_outside_its_root_is_refused() {
    let fx = Fixture::new();
    let err = fx.pin("run-out", &fx.outside, true).unwrap_err();
    assert!(matches!(err, PinError::OutsideRoot { .. }), "{err}");
}
