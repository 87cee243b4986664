use super::*;

fn drain(c: &mut Coalescer) -> Vec<LiveChunk> {
    std::iter::from_fn(|| c.next_chunk()).collect()
}

#[test]
fn adjacent_writes_merge_and_streams_keep_their_order() {
    let mut c = Coalescer::new(1 << 20, 0);
    c.push(OutputStream::Stdout, b"a");
    c.push(OutputStream::Stdout, b"b");
    c.push(OutputStream::Stderr, b"E");
    c.push(OutputStream::Stdout, b"c");
    c.finish();
    let got: Vec<_> = drain(&mut c)
        .into_iter()
        .map(|k| (k.seq, k.stream, k.data))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, OutputStream::Stdout, "ab".to_owned()),
            (1, OutputStream::Stderr, "E".to_owned()),
            (2, OutputStream::Stdout, "c".to_owned()),
        ]
    );
    assert!(c.is_done());
}

#[test]
fn events_are_at_most_64_kib_and_cut_on_char_boundaries() {
    let mut c = Coalescer::new(1 << 20, 5);
    let text = "é".repeat(40_000); // 80 000 bytes
    c.push(OutputStream::Stdout, text.as_bytes());
    c.finish();
    let chunks = drain(&mut c);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].seq, 5);
    assert!(chunks.iter().all(|k| k.data.len() <= MAX_EVENT_DATA_BYTES));
    assert_eq!(chunks[0].data.len(), MAX_EVENT_DATA_BYTES);
    let joined: String = chunks.iter().map(|k| k.data.as_str()).collect();
    assert_eq!(joined, text);
}

#[test]
fn a_character_split_across_writes_is_held_until_complete() {
    let snow = "☃".as_bytes(); // 3 bytes
    for split in 1..snow.len() {
        let mut c = Coalescer::new(1 << 20, 0);
        c.push(OutputStream::Stdout, &[b"x", &snow[..split]].concat());
        // The cut character is not handed out yet.
        assert_eq!(c.next_chunk().unwrap().data, "x");
        c.push(OutputStream::Stderr, b"!");
        c.push(OutputStream::Stdout, &snow[split..]);
        c.finish();
        let rest: Vec<_> = drain(&mut c).into_iter().map(|k| k.data).collect();
        assert_eq!(rest, vec!["!".to_owned(), "☃".to_owned()], "split {split}");
    }
}

#[test]
fn invalid_bytes_are_replaced_like_the_final_output() {
    let inputs: [&[u8]; 4] = [
        b"a\xffb",
        b"\xe2\x98",
        b"\xe2\x98z",
        b"\xf0\x9f\x98\x80\xc0",
    ];
    for bytes in inputs {
        let mut c = Coalescer::new(1 << 20, 0);
        // One byte at a time: the worst split there is.
        for b in bytes {
            c.push(OutputStream::Stdout, std::slice::from_ref(b));
        }
        c.finish();
        let joined: String = drain(&mut c).into_iter().map(|k| k.data).collect();
        assert_eq!(joined, String::from_utf8_lossy(bytes), "{bytes:?}");
    }
}

#[test]
fn an_overflowing_backlog_stops_live_output_with_a_note() {
    let mut c = Coalescer::new(MAX_EVENT_DATA_BYTES, 0);
    c.push(OutputStream::Stdout, &[b'a'; 60_000]);
    c.push(OutputStream::Stdout, &[b'b'; 10_000]); // over the backlog
    c.push(OutputStream::Stderr, b"later"); // not taken any more
    c.finish();
    let chunks = drain(&mut c);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].data, "a".repeat(60_000));
    assert_eq!(chunks[1].seq, 1);
    assert_eq!(chunks[1].data, "");
    let note = chunks[1].note.as_deref().unwrap();
    assert!(note.contains("stopped after 60000 bytes"), "{note}");
    assert!(c.is_done());
}

#[test]
fn nothing_is_done_before_the_finish() {
    let mut c = Coalescer::new(1 << 20, 0);
    assert!(!c.is_done());
    assert!(c.next_chunk().is_none());
    c.finish();
    assert!(c.is_done());
}

#[test]
fn a_recovered_run_starts_above_every_earlier_seq() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    // 12.34 s after the start: at most 123 events can have gone out.
    let now = start + Duration::from_millis(12_340);
    let first = recovered_first_seq(Some(start), now);
    assert!(first > 123);
    assert_eq!(first, 124 + 1 + RECOVERY_SEQ_MARGIN);
    assert_eq!(recovered_first_seq(None, now), 1 + RECOVERY_SEQ_MARGIN);
    assert_eq!(
        output_event_name("bus.docker.run.response", "x".into()),
        "bus.docker.run.output"
    );
    assert_eq!(output_event_name("odd", "fallback".into()), "fallback");
}
