//! The live output figure (issue 10, item 7): one run printing 100 MiB,
//! with `stream_output` and without, each on a fresh worker (so its
//! `VmHWM` is that run's alone), alternated pair by pair in one benchmark
//! run: end-to-end time and the worker's peak RSS, and their ratios.

use serde_json::{json, Value};

use crate::report::Figures;
use crate::stats::Samples;
use crate::{expect_bytes, progress, Bench, BenchError, HUNDRED_MIB};

/// What the live output scenario measured.
#[derive(Debug, Default)]
pub struct LiveFigures {
    /// End-to-end time (publish → response) without live output.
    pub plain: Samples,
    /// The same with `stream_output: true`.
    pub streamed: Samples,
    /// Worker `VmHWM` per plain run, MiB.
    pub plain_peak_mib: Vec<f64>,
    /// Worker `VmHWM` per streamed run, MiB.
    pub streamed_peak_mib: Vec<f64>,
    /// `run.output` events the caller received per streamed run.
    pub events: Vec<usize>,
    /// Bytes of `data` those events carried per streamed run.
    pub streamed_bytes: Vec<usize>,
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len().checked_sub(1)? / 2).copied()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[allow(clippy::cast_precision_loss)]
fn median_usize(values: &[usize]) -> Option<f64> {
    median(&values.iter().map(|v| *v as f64).collect::<Vec<_>>())
}

impl LiveFigures {
    /// Streamed over plain end-to-end time, medians.
    pub fn time_ratio(&self) -> Option<f64> {
        ratio(self.streamed.p50(), self.plain.p50())
    }

    /// Streamed over plain peak RSS, medians.
    pub fn rss_ratio(&self) -> Option<f64> {
        ratio(
            median(&self.streamed_peak_mib),
            median(&self.plain_peak_mib),
        )
    }

    /// Table rows: `(label, n, value, unit, note)`.
    pub fn rows(&self) -> Vec<(String, String, Option<f64>, &'static str, String)> {
        let n = self.plain.len().to_string();
        let events = median_usize(&self.events).unwrap_or_default();
        let bytes = median_usize(&self.streamed_bytes).unwrap_or_default() / 1024.0;
        vec![
            (
                "100 MiB run, no live output (p50)".into(),
                n.clone(),
                self.plain.p50(),
                "ms",
                String::new(),
            ),
            (
                "100 MiB run, stream_output (p50)".into(),
                n.clone(),
                self.streamed.p50(),
                "ms",
                format!("{events:.0} events, {bytes:.0} KiB streamed before the stop note"),
            ),
            (
                "  time ratio stream/plain".into(),
                n.clone(),
                self.time_ratio(),
                "×",
                String::new(),
            ),
            (
                "worker peak RSS, 100 MiB, no live output".into(),
                n.clone(),
                median(&self.plain_peak_mib),
                "MiB",
                String::new(),
            ),
            (
                "worker peak RSS, 100 MiB, stream_output".into(),
                n.clone(),
                median(&self.streamed_peak_mib),
                "MiB",
                String::new(),
            ),
            (
                "  peak RSS ratio stream/plain".into(),
                n,
                self.rss_ratio(),
                "×",
                String::new(),
            ),
        ]
    }

    pub fn to_json(&self) -> Value {
        json!({
            "plain_ms": self.plain.to_json(),
            "streamed_ms": self.streamed.to_json(),
            "plain_peak_rss_mib": self.plain_peak_mib,
            "streamed_peak_rss_mib": self.streamed_peak_mib,
            "events": self.events,
            "streamed_bytes": self.streamed_bytes,
            "time_ratio_p50": self.time_ratio(),
            "peak_rss_ratio_median": self.rss_ratio(),
        })
    }
}

/// A run printing 100 MiB with and without `stream_output`, alternated
/// pair by pair, each on a fresh worker (its `VmHWM` is that run's).
pub async fn scenario(bench: &Bench, figures: &mut Figures) -> Result<(), BenchError> {
    let pairs = bench.args.live_pairs;
    if pairs == 0 {
        return Ok(());
    }
    progress(format!(
        "live output: {pairs} pairs of 100 MiB runs, with and without stream_output"
    ));
    let image = bench.args.image.as_str();
    let hundred = format!("yes 0123456789abcdef | head -c {HUNDRED_MIB}");
    let command = ["sh", "-c", hundred.as_str()];
    let mut live = LiveFigures::default();
    for i in 0..pairs {
        for streamed in [false, true] {
            let scenario = if streamed { "live" } else { "plain" };
            let (worker, mut caller) = bench.worker(&format!("{scenario}{i}"), 1).await?;
            let run_id = bench.run_id(scenario, i);
            let response = if streamed {
                let (elapsed, response, events, bytes) =
                    caller.run_streaming(&run_id, image, &command).await?;
                live.streamed.push(elapsed);
                live.events.push(events);
                live.streamed_bytes.push(bytes);
                response
            } else {
                let (elapsed, response) = caller.run(&run_id, image, &command).await?;
                live.plain.push(elapsed);
                response
            };
            expect_bytes(&response, HUNDRED_MIB)?;
            let peak = worker.memory_mib("VmHWM")?;
            if streamed {
                live.streamed_peak_mib.push(peak);
            } else {
                live.plain_peak_mib.push(peak);
            }
            worker.stop().await?;
        }
    }
    figures.live = Some(live);
    Ok(())
}
