//! Latency samples and their nearest-rank percentiles.

use std::time::Duration;

use serde_json::{json, Value};

/// A set of latency samples in milliseconds, in the order they were taken.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    ms: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }

    pub fn push_ms(&mut self, ms: f64) {
        self.ms.push(ms);
    }

    pub fn len(&self) -> usize {
        self.ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ms.is_empty()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The nearest-rank percentile `p` (0 < p ≤ 100): the smallest sample
    /// with at least p % of the samples at or below it. With 30 samples,
    /// p99 is the maximum and p95 the second largest.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        nearest_rank(&self.sorted(), p)
    }

    pub fn p50(&self) -> Option<f64> {
        self.percentile(50.0)
    }

    pub fn p95(&self) -> Option<f64> {
        self.percentile(95.0)
    }

    pub fn p99(&self) -> Option<f64> {
        self.percentile(99.0)
    }

    pub fn mean(&self) -> Option<f64> {
        (!self.ms.is_empty()).then(|| self.ms.iter().sum::<f64>() / self.ms.len() as f64)
    }

    /// `{n, p50, p95, p99, mean, min, max, samples}` (milliseconds), or
    /// `null` when there are no samples.
    pub fn to_json(&self) -> Value {
        if self.ms.is_empty() {
            return Value::Null;
        }
        let sorted = self.sorted();
        json!({
            "n": self.ms.len(),
            "p50": round3(self.p50()),
            "p95": round3(self.p95()),
            "p99": round3(self.p99()),
            "mean": round3(self.mean()),
            "min": round3(sorted.first().copied()),
            "max": round3(sorted.last().copied()),
            "samples": self.ms.iter().map(|v| round3(Some(*v))).collect::<Vec<_>>(),
        })
    }
}

/// Nearest rank on sorted data: rank ⌈p/100 · n⌉, 1-based.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// A figure rounded to three decimals for the JSON file.
pub fn round3(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |v| json!((v * 1000.0).round() / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_follows_the_definition() {
        let data: Vec<f64> = (1..=30).map(f64::from).collect();
        assert_eq!(nearest_rank(&data, 50.0), Some(15.0));
        assert_eq!(nearest_rank(&data, 95.0), Some(29.0));
        assert_eq!(nearest_rank(&data, 99.0), Some(30.0));
        assert_eq!(nearest_rank(&data, 100.0), Some(30.0));
        assert_eq!(nearest_rank(&[7.0], 50.0), Some(7.0));
        assert_eq!(nearest_rank(&[], 50.0), None);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&hundred, 99.0), Some(99.0));
        assert_eq!(nearest_rank(&hundred, 1.0), Some(1.0));
    }
}
