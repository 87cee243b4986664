//! Fitting a run report under the event size limit: the echoed `args`
//! are cut first (keeping at least [`ARGS_KEPT_BYTES`]), then the stdout
//! and stderr tails share what is left, measured in JSON-escaped bytes.

use bus_docker_domain::output::CapturedOutput;
use bus_docker_domain::run::RunReport;

/// Echoed args keep at least this many (escaped) bytes when the output has
/// to be cut too: args are cut first, but a short command line stays
/// readable next to a long output.
pub const ARGS_KEPT_BYTES: usize = 64 * 1024;

/// What of a run report goes on the wire once fitted.
pub(super) struct FittedRun {
    pub(super) args: Vec<String>,
    pub(super) args_truncated: bool,
    pub(super) stdout: CapturedOutput,
    pub(super) stderr: CapturedOutput,
}

/// The run report's args and output, cut so that the envelope `measure`
/// returns the size of fits `budget`: the echoed args first (keeping the
/// leading arguments that fit beside the whole output, and at least
/// [`ARGS_KEPT_BYTES`] of them), then the output tails.
pub(super) fn fit_run(
    report: &RunReport,
    budget: usize,
    measure: impl Fn(&[String], bool, &CapturedOutput, &CapturedOutput) -> usize,
) -> FittedRun {
    let whole = FittedRun {
        args: report.args.clone(),
        args_truncated: false,
        stdout: report.stdout.clone(),
        stderr: report.stderr.clone(),
    };
    if measure(&whole.args, false, &whole.stdout, &whole.stderr) <= budget {
        return whole;
    }
    let emptied = |o: &CapturedOutput| CapturedOutput {
        text: String::new(),
        total_bytes: o.total_bytes,
        truncated: o.truncated,
    };
    let base = measure(&[], true, &emptied(&whole.stdout), &emptied(&whole.stderr));
    let output = escaped_len(&whole.stdout.text) + escaped_len(&whole.stderr.text);
    let room = budget
        .saturating_sub(base)
        .saturating_sub(output)
        .max(ARGS_KEPT_BYTES);
    let args = leading_args(&report.args, room);
    let args_truncated = args.len() < report.args.len();
    if args_truncated {
        tracing::debug!(
            run_id = %report.run_id,
            args_kept = args.len(),
            args_total = report.args.len(),
            "cut the echoed args to fit the event size limit"
        );
    }
    let (stdout, stderr) = fit_outputs(report, budget, |out, err| {
        measure(&args, args_truncated, out, err)
    });
    FittedRun {
        args,
        args_truncated,
        stdout,
        stderr,
    }
}

/// The longest prefix of `args` whose JSON array elements (quotes and
/// separating commas included) take at most `room` bytes.
fn leading_args(args: &[String], room: usize) -> Vec<String> {
    let mut used = 0;
    let mut kept = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let cost = escaped_len(arg) + 2 + usize::from(i > 0);
        if used + cost > room {
            break;
        }
        used += cost;
        kept.push(arg.clone());
    }
    kept
}

/// The run's stdout and stderr, their tails shrunk so that the envelope
/// `measure` returns the size of fits `budget`.
fn fit_outputs(
    report: &RunReport,
    budget: usize,
    measure: impl Fn(&CapturedOutput, &CapturedOutput) -> usize,
) -> (CapturedOutput, CapturedOutput) {
    let emptied = |o: &CapturedOutput| CapturedOutput {
        text: String::new(),
        total_bytes: o.total_bytes,
        truncated: o.truncated,
    };
    let mut stdout = report.stdout.clone();
    let mut stderr = report.stderr.clone();
    let base = measure(&emptied(&stdout), &emptied(&stderr));
    let needed = escaped_len(&stdout.text) + escaped_len(&stderr.text);
    if base.saturating_add(needed) <= budget {
        return (stdout, stderr);
    }
    share_room(&mut stdout, &mut stderr, budget.saturating_sub(base));
    // `escaped_len` mirrors serde_json's escaping, so this loop should not
    // run; it guards the limit should the two ever disagree.
    while measure(&stdout, &stderr) > budget && !(stdout.text.is_empty() && stderr.text.is_empty())
    {
        let larger = if stdout.text.len() >= stderr.text.len() {
            &mut stdout
        } else {
            &mut stderr
        };
        larger.shrink_to(larger.text.len() / 2);
    }
    tracing::debug!(
        run_id = %report.run_id,
        stdout_kept = stdout.text.len(),
        stderr_kept = stderr.text.len(),
        "shrank captured output to fit the event size limit"
    );
    (stdout, stderr)
}

/// Split `room` escaped bytes between the two tails: each gets half, and
/// one that needs less than half leaves the rest to the other.
fn share_room(stdout: &mut CapturedOutput, stderr: &mut CapturedOutput, room: usize) {
    let (a, b) = (escaped_len(&stdout.text), escaped_len(&stderr.text));
    let half = room / 2;
    let (room_a, room_b) = if a <= half {
        (a, room - a)
    } else if b <= room - half {
        (room - b, b)
    } else {
        (half, room - half)
    };
    keep_tail(stdout, room_a);
    keep_tail(stderr, room_b);
}

/// Keep the longest tail whose JSON-escaped form takes at most `room` bytes.
fn keep_tail(output: &mut CapturedOutput, room: usize) {
    let mut used = 0;
    let mut keep = 0;
    for c in output.text.chars().rev() {
        let cost = escaped_char_len(c);
        if used + cost > room {
            break;
        }
        used += cost;
        keep += c.len_utf8();
    }
    output.shrink_to(keep);
}

/// The bytes `s` takes inside a JSON string as serde_json writes it,
/// without the quotes.
fn escaped_len(s: &str) -> usize {
    s.chars().map(escaped_char_len).sum()
}

fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\t' | '\n' | '\u{c}' | '\r' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_len_matches_serde_json() {
        let samples = [
            String::new(),
            "plain ascii".to_owned(),
            "quote \" backslash \\ slash /".to_owned(),
            "\u{8}\t\n\u{c}\r".to_owned(),
            (0u8..0x20).map(char::from).collect(),
            "\u{7f} é 漢 🦀 \u{2028}".to_owned(),
        ];
        for s in samples {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(escaped_len(&s) + 2, json.len(), "{s:?}");
        }
    }

    #[test]
    fn keep_tail_respects_the_escaped_budget() {
        let mut out = CapturedOutput {
            text: "ab\u{1}\u{1}c".into(),
            total_bytes: 5,
            truncated: false,
        };
        keep_tail(&mut out, 7);
        assert_eq!(out.text, "\u{1}c");
        assert!(out.truncated);
        keep_tail(&mut out, 100);
        assert_eq!(out.text, "\u{1}c");
    }

    #[test]
    fn share_room_gives_the_unused_half_to_the_other() {
        let mut a = CapturedOutput {
            text: "x".repeat(10),
            ..CapturedOutput::default()
        };
        let mut b = CapturedOutput {
            text: "y".repeat(100),
            ..CapturedOutput::default()
        };
        share_room(&mut a, &mut b, 50);
        assert_eq!((a.text.len(), b.text.len()), (10, 40));
        assert!(!a.truncated && b.truncated);
        let mut a = CapturedOutput {
            text: "x".repeat(100),
            ..CapturedOutput::default()
        };
        let mut b = CapturedOutput {
            text: "y".repeat(100),
            ..CapturedOutput::default()
        };
        share_room(&mut a, &mut b, 51);
        assert_eq!((a.text.len(), b.text.len()), (25, 26));
    }
}
