//! Reading this process's mount table.

use std::path::Path;

/// Whether `path` (absolute, as spelled in the mount table) is a mount
/// point in this process's mount namespace.
///
/// The worker uses it on the engine socket: a socket that is itself a
/// mount point was bind-mounted in from another mount namespace (the
/// worker runs in a container), and dockerd would not see pins made here.
///
/// # Errors
/// The error reading `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mounted_in(&table, path))
}

fn mounted_in(table: &str, path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| unescape(point) == wanted)
}

/// Mount points escape space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
        90 27 254:0 /var/run/docker.sock /var/run/docker.sock rw - ext4 /dev/vda rw\n\
        91 27 0:5 / /srv/with\\040space rw - tmpfs t rw\n";

    #[test]
    fn finds_mount_points_escaped_or_not() {
        assert!(mounted_in(TABLE, Path::new("/var/run/docker.sock")));
        assert!(mounted_in(TABLE, Path::new("/srv/with space")));
        assert!(!mounted_in(TABLE, Path::new("/run/docker.sock")));
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self")).unwrap());
    }
}
