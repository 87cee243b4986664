//! Client configuration and the retry backoff.

use std::time::Duration;

use rand::Rng;

use crate::{EventsUrl, TokenSource};

/// Default maximum NDJSON line length: the 4 MiB event limit.
pub const DEFAULT_MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Everything [`crate::EventsClient::new`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The Events API base URL.
    pub url: EventsUrl,
    /// Where the bearer token comes from.
    pub token: TokenSource,
    /// Delay between publish retries (default 100 ms .. 5 s).
    pub publish_backoff: Backoff,
    /// Delay between stream reconnects (default 250 ms .. 5 s).
    pub stream_backoff: Backoff,
    /// Longest accepted stream line (default 4 MiB).
    pub max_line_bytes: usize,
    /// Whole-request timeout of a publish, and how long a subscription waits
    /// for response headers (default 10 s). The body of a stream has no
    /// timeout: it may be idle for as long as no events are sent.
    pub request_timeout: Duration,
    /// TCP connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// How long a stream the server refused (403: the token lacks the
    /// scope) waits before it asks again, so that a token re-granted the
    /// scope is picked up (default [`REFUSED_STREAM_RETRY`]).
    pub refused_retry: Duration,
}

/// How often a refused (403) stream is asked for again: about once a
/// minute (docs/protocol.md §9).
pub const REFUSED_STREAM_RETRY: Duration = Duration::from_secs(60);

impl ClientConfig {
    /// A configuration with the defaults for everything but URL and token.
    #[must_use]
    pub fn new(url: EventsUrl, token: TokenSource) -> Self {
        Self {
            url,
            token,
            publish_backoff: Backoff::PUBLISH_DEFAULT,
            stream_backoff: Backoff::STREAM_DEFAULT,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            refused_retry: REFUSED_STREAM_RETRY,
        }
    }
}

/// Capped exponential backoff with equal jitter.
///
/// The n-th delay (from 0) is drawn uniformly from `[d/2, d]` where
/// `d = min(min * 2^(n+1), max)`: the first retry waits between `min` and
/// `2 * min`, later ones double until they wait between `max/2` and `max`.
/// The result is always within `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first (and smallest) delay.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Backoff {
    /// Publish retries: 100 ms .. 5 s.
    pub const PUBLISH_DEFAULT: Self = Self {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };

    /// Stream reconnects: 250 ms .. 5 s (`BUS_EVENTS_LISTENER_RETRY_MIN/MAX`).
    pub const STREAM_DEFAULT: Self = Self {
        min: Duration::from_millis(250),
        max: Duration::from_secs(5),
    };

    /// The delay before retry number `attempt` (0 for the first retry).
    #[must_use]
    pub fn delay(&self, attempt: u32) -> Duration {
        let max = self.max.max(self.min);
        let ceiling = self
            .min
            .checked_mul(2u32.saturating_pow(attempt.saturating_add(1).min(31)))
            .map_or(max, |d| d.min(max));
        let half = ceiling / 2;
        let jitter_nanos =
            u64::try_from(ceiling.saturating_sub(half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(rand::rng().random_range(0..=jitter_nanos));
        (half + jitter).clamp(self.min, max)
    }
}

/// The retry counter of one retry loop.
#[derive(Debug)]
pub(crate) struct BackoffState {
    policy: Backoff,
    attempt: u32,
}

impl BackoffState {
    pub(crate) fn new(policy: Backoff) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The next delay; each call doubles the ceiling until `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.policy.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}
