//! NDJSON framing: every sample gives the same frames however it is chunked.

use bus_events_client::ndjson::{End, Frame, LineFramer, OVERSIZED_PREFIX_BYTES};

fn line(text: &str) -> Frame {
    Frame::Line(text.as_bytes().to_vec().into())
}

fn oversized(prefix: &str, len: usize) -> Frame {
    Frame::Oversized {
        prefix: prefix.as_bytes().to_vec().into(),
        len,
    }
}

/// Frames `input` fed as the given chunks.
fn run<'a>(max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, End) {
    let mut framer = LineFramer::new(max);
    let mut frames = Vec::new();
    for chunk in chunks {
        frames.extend(framer.push(chunk));
    }
    (frames, framer.finish())
}

/// Checks the expected frames for the whole input, every split into two,
/// every split into three, and 1-byte chunks.
fn check(max: usize, input: &[u8], expected: &[Frame], expected_end: End) {
    let expected = (expected.to_vec(), expected_end);
    assert_eq!(run(max, [input]), expected, "whole input {input:?}");
    assert_eq!(
        run(max, input.chunks(1)),
        expected,
        "1-byte chunks of {input:?}"
    );
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(run(max, [a, b]), expected, "split at {i} of {input:?}");
        for j in i..=input.len() {
            let (b, c) = input[i..].split_at(j - i);
            assert_eq!(
                run(max, [a, b, c]),
                expected,
                "split at {i} and {j} of {input:?}"
            );
        }
    }
}

#[test]
fn plain_lines() {
    check(
        64,
        b"{\"a\":1}\n{\"b\":2}\n",
        &[line("{\"a\":1}"), line("{\"b\":2}")],
        End::Clean,
    );
}

#[test]
fn crlf_line_endings_are_stripped() {
    check(
        64,
        b"one\r\ntwo\r\n",
        &[line("one"), line("two")],
        End::Clean,
    );
}

#[test]
fn a_carriage_return_inside_a_line_is_kept() {
    check(64, b"a\rb\n", &[line("a\rb")], End::Clean);
}

#[test]
fn blank_lines_are_skipped() {
    check(
        64,
        b"\n\r\n  \n\t\r\none\n\n\r\ntwo\n",
        &[line("one"), line("two")],
        End::Clean,
    );
}

#[test]
fn empty_input_is_a_clean_end() {
    check(64, b"", &[], End::Clean);
}

#[test]
fn a_stream_cut_mid_line_is_reported() {
    check(
        64,
        b"one\ntw",
        &[line("one")],
        End::CutMidLine { partial_len: 2 },
    );
    check(
        64,
        b"one\n\r",
        &[line("one")],
        End::CutMidLine { partial_len: 1 },
    );
}

#[test]
fn a_line_of_exactly_max_bytes_is_accepted_with_and_without_cr() {
    check(
        4,
        b"abcd\nabcd\r\n",
        &[line("abcd"), line("abcd")],
        End::Clean,
    );
}

#[test]
fn a_line_one_byte_over_max_is_oversized() {
    check(
        4,
        b"abcde\nabcde\r\nok\n",
        &[oversized("abcde", 5), oversized("abcde", 5), line("ok")],
        End::Clean,
    );
}

#[test]
fn oversized_lines_are_reported_and_framing_resumes() {
    check(
        8,
        b"short\n0123456789abcdef\r\nok\n",
        &[line("short"), oversized("0123456789abcdef", 16), line("ok")],
        End::Clean,
    );
}

#[test]
fn a_stream_cut_inside_an_oversized_line_is_reported() {
    check(
        4,
        b"ok\nabcdefgh",
        &[line("ok")],
        End::CutMidLine { partial_len: 8 },
    );
}

#[test]
fn oversized_prefix_is_capped_and_chunking_does_not_change_it() {
    let max = 100_000;
    let len = 200_000;
    let mut input: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    input.extend_from_slice(b"\r\n{\"next\":true}\n");
    let expected = (
        vec![
            Frame::Oversized {
                prefix: input[..OVERSIZED_PREFIX_BYTES].to_vec().into(),
                len,
            },
            line("{\"next\":true}"),
        ],
        End::Clean,
    );
    for chunk in [1, 7, 4096, 65_535, 65_536, 65_537, 100_001, 100_002, len] {
        assert_eq!(run(max, input.chunks(chunk)), expected, "chunks of {chunk}");
    }
    let cuts = [
        1,
        OVERSIZED_PREFIX_BYTES - 1,
        OVERSIZED_PREFIX_BYTES,
        OVERSIZED_PREFIX_BYTES + 1,
        max,
        max + 1,
        max + 2,
        len,
        len + 1,
        len + 2,
    ];
    for cut in cuts {
        let (a, b) = input.split_at(cut);
        assert_eq!(run(max, [a, b]), expected, "split at {cut}");
    }
}

#[test]
fn a_short_oversized_line_keeps_all_of_itself_as_prefix() {
    // With a limit below the prefix size the whole line fits in the prefix,
    // minus its trailing CR.
    let max = 10;
    let input = b"0123456789012345678901234\r\n";
    let expected = (vec![oversized("0123456789012345678901234", 25)], End::Clean);
    for i in 0..=input.len() {
        let (a, b) = input.split_at(i);
        assert_eq!(run(max, [a, b]), expected, "split at {i}");
    }
    assert_eq!(run(max, input.chunks(1)), expected);
}

#[test]
fn memory_stays_bounded_on_a_huge_line() {
    let max = 1024 * 1024;
    let mut framer = LineFramer::new(max);
    let chunk = vec![b'x'; 8 * 1024];
    for _ in 0..(10 * 1024 * 1024 / chunk.len()) {
        assert!(framer.push(&chunk).is_empty());
        assert!(framer.buffered_bytes() <= max + 1);
    }
    assert_eq!(framer.buffered_bytes(), OVERSIZED_PREFIX_BYTES);
    let frames = framer.push(b"\n");
    assert!(matches!(
        frames.as_slice(),
        [Frame::Oversized { prefix, len }]
            if prefix.len() == OVERSIZED_PREFIX_BYTES && *len == 10 * 1024 * 1024
    ));
    assert_eq!(framer.buffered_bytes(), 0);
    assert_eq!(framer.finish(), End::Clean);
}
