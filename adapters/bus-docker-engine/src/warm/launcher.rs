//! The launcher a parked container runs, and the command frame the
//! worker hands it at a claim (the module docs of [`super`]).

use bus_docker_domain::ports::Stdin;
use bus_docker_domain::spec::RunSpec;

/// The launcher (see the module docs). Variables carry a `__bl_` prefix so
/// that they do not clobber the image's environment; the export loop keeps
/// its count in a positional parameter, which no `export` can change.
pub const LAUNCHER: &str = r#"IFS= read -r __bl_rec || exit 0
printf '%s\n' "$__bl_rec"
__bl_gone() {
  printf '%s\n' "$__bl_gone_msg" >&2
  exit 125
}
__bl_gone_msg='bus-launch: stdin ended before the command was handed over; nothing ran'
__bl_v() {
  IFS= read -r __bl_n || __bl_gone
  __bl_val=
  __bl_i=0
  while [ "$__bl_i" -lt "$__bl_n" ]; do
    IFS= read -r __bl_l || __bl_gone
    if [ "$__bl_i" -eq 0 ]; then __bl_val=$__bl_l; else __bl_val="$__bl_val
$__bl_l"; fi
    __bl_i=$((__bl_i + 1))
  done
}
__bl_v
__bl_wd=$__bl_val
__bl_v
__bl_ne=$__bl_val
set --
__bl_k=0
while [ "$__bl_k" -lt "$__bl_ne" ]; do __bl_v; set -- "$@" "$__bl_val"; __bl_k=$((__bl_k + 1)); done
__bl_v
__bl_na=$__bl_val
__bl_k=0
while [ "$__bl_k" -lt "$__bl_na" ]; do __bl_v; set -- "$@" "$__bl_val"; __bl_k=$((__bl_k + 1)); done
if [ -n "$__bl_wd" ]; then
  cd -- "$__bl_wd" 2>/dev/null || { mkdir -p -- "$__bl_wd" 2>/dev/null && cd -- "$__bl_wd"; } || {
    printf 'bus-launch: cannot change to the workdir %s\n' "$__bl_wd" >&2
    exit 126
  }
fi
set -- "$__bl_ne" "$@"
while [ "$1" -gt 0 ]; do export "$2"; __bl_c=$(($1 - 1)); shift 2; set -- "$__bl_c" "$@"; done
shift
exec "$@"
"#;

/// What the launcher writes to stderr (with exit status
/// [`NEVER_RAN_STATUS`]) when its stdin ends after the claim record and
/// before the command: the worker that claimed it went away in between.
pub const NEVER_RAN: &str =
    "bus-launch: stdin ended before the command was handed over; nothing ran";
/// The launcher's exit status then.
pub const NEVER_RAN_STATUS: i64 = 125;

/// Whether a warm run's exit is the launcher's "nothing ran".
pub(crate) fn never_ran(exit: &bus_docker_domain::run::Exit) -> bool {
    exit.exit_code == Some(NEVER_RAN_STATUS) && exit.stderr.text.trim_end() == NEVER_RAN
}

/// The shell the launcher needs in the image.
pub const LAUNCHER_SHELL: &str = "/bin/sh";

/// One value as the launcher reads it: its line count, then its lines.
fn counted(out: &mut Vec<u8>, value: &str) {
    let lines: Vec<&str> = value.split('\n').collect();
    out.extend_from_slice(format!("{}\n", lines.len()).as_bytes());
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// The command frame for the launcher (step 2 of the module docs).
pub(crate) fn frame(spec: &RunSpec, entrypoint: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    counted(&mut out, spec.workdir.as_ref().map_or("", |w| w.as_str()));
    counted(&mut out, &spec.env.len().to_string());
    for (k, v) in &spec.env {
        counted(&mut out, &format!("{k}={v}"));
    }
    let argc = entrypoint.len() + spec.command.len();
    counted(&mut out, &argc.to_string());
    for arg in entrypoint.iter().chain(&spec.command) {
        counted(&mut out, arg);
    }
    out
}

/// The run's stdin behind the launcher's frame. Stdin is always closed
/// after it (a cold run without stdin reads `/dev/null`; here the
/// launcher's pipe must end).
pub(crate) fn behind_frame(frame: Vec<u8>, stdin: Stdin) -> Stdin {
    match stdin {
        Stdin::Closed => Stdin::Text(frame),
        Stdin::Text(text) => {
            let mut all = frame;
            all.extend_from_slice(&text);
            Stdin::Text(all)
        }
        Stdin::Interactive(initial, rest) => {
            let mut all = frame;
            all.extend_from_slice(&initial.unwrap_or_default());
            Stdin::Interactive(Some(all), rest)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_spec;

    #[test]
    fn the_frame_counts_lines_so_any_value_survives() {
        let mut spec = test_spec();
        spec.command = vec![
            "printf".into(),
            "a\nb\\n $(x) `y` '\"".into(),
            String::new(),
        ];
        spec.env = BTreeMap::from([("K".to_owned(), "v\nw".to_owned())]);
        let frame = String::from_utf8(frame(&spec, &["/ep".to_owned()])).unwrap();
        assert_eq!(
            frame,
            "1\n\n1\n1\n2\nK=v\nw\n1\n4\n1\n/ep\n1\nprintf\n2\na\nb\\n $(x) `y` '\"\n1\n\n"
        );
    }
}
