//! What a static run does, by its command (the crate docs list the
//! programs): choosing the program, running it, and its stdout.

use std::sync::Arc;
use std::time::Duration;

use bus_docker_domain::output::TailBuffer;
use bus_docker_domain::output::{OutputSink, OutputStream};
use bus_docker_domain::ports::Stdin;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::StaticRuntime;

/// A run's stdout: its tail, and the live output sink when there is one.
pub(crate) struct Stdout {
    pub(crate) tail: TailBuffer,
    pub(crate) sink: Option<Arc<dyn OutputSink>>,
}

impl Stdout {
    fn push(&mut self, bytes: &[u8]) {
        self.tail.push(bytes);
        if let Some(sink) = &self.sink {
            sink.write(OutputStream::Stdout, bytes);
        }
    }
}

enum Program {
    Exit(i64),
    Sleep(Duration),
    Cat,
    Echo(String),
}

fn program(args: &[String]) -> Program {
    match args {
        [cmd, n] if cmd == "exit" => n
            .parse()
            .map_or_else(|_| Program::Echo(args.join(" ")), Program::Exit),
        [cmd, s] if cmd == "sleep" => s
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or_else(
                || Program::Echo(args.join(" ")),
                |s| Program::Sleep(Duration::from_secs_f64(s)),
            ),
        [cmd] if cmd == "cat" => Program::Cat,
        _ => Program::Echo(args.join(" ")),
    }
}

impl StaticRuntime {
    /// Run the program `args` name for container `id`; its exit code.
    pub(crate) async fn run(
        &self,
        id: &str,
        args: &[String],
        stdin: Stdin,
        stdout: &mut Stdout,
    ) -> i64 {
        match program(args) {
            Program::Exit(code) => code,
            Program::Sleep(d) => {
                tokio::time::sleep(d).await;
                0
            }
            Program::Echo(text) => {
                stdout.push(text.as_bytes());
                stdout.push(b"\n");
                0
            }
            Program::Cat => {
                self.cat(id, stdin, stdout).await;
                0
            }
        }
    }

    /// `cat`: stdout is the stdin text, or for interactive runs the input
    /// data (from the run's stream or `write_input`) until `eof`.
    async fn cat(&self, id: &str, stdin: Stdin, stdout: &mut Stdout) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        if let Some(e) = self.lock().containers.get_mut(id) {
            e.input = Some(tx);
        }
        match stdin {
            Stdin::Closed => {}
            Stdin::Text(text) => stdout.push(&text),
            Stdin::Interactive(initial, mut stream) => {
                if let Some(text) = initial {
                    stdout.push(&text);
                }
                loop {
                    let chunk = tokio::select! {
                        Some(c) = stream.next() => c,
                        Some(c) = rx.recv() => c,
                        else => break,
                    };
                    stdout.push(&chunk.data);
                    if chunk.eof {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_chosen_by_command() {
        let a = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        assert!(matches!(program(&a(&["exit", "3"])), Program::Exit(3)));
        assert!(
            matches!(program(&a(&["sleep", "0.5"])), Program::Sleep(d) if d == Duration::from_millis(500))
        );
        assert!(matches!(program(&a(&["cat"])), Program::Cat));
        assert!(matches!(program(&a(&["sleep", "-1"])), Program::Echo(_)));
        assert!(matches!(program(&a(&["printf", "OK"])), Program::Echo(t) if t == "printf OK"));
    }
}
