//! A [`RunSpec`] builder for tests and the benchmark (feature `testing`):
//! one place that knows every field, so a new field is a default here and
//! not an edit of each test's literal.
//!
//! Defaults: no owner and no profile, correlation `c-<run id>`, reply event
//! `bus.docker.run.response`, pull policy `never`, command `true`, no
//! workdir, env, mounts, labels or stdin, network `none`, a 60 s timeout,
//! default hardening, a 1 MiB output cap, no live output, no Codex home.

use std::collections::BTreeMap;
use std::time::Duration;

use super::RunSpec;
use crate::ids::{CorrelationId, ImageRef, NetworkName, OwnerId, ProfileName, RunId};
use crate::profile::{Hardening, PullPolicy};

/// Builds a [`RunSpec`] field by field; panics on an invalid literal (a
/// test's own mistake).
#[derive(Clone, Debug)]
pub struct RunSpecBuilder(RunSpec);

impl RunSpec {
    /// A spec for run `run_id` of `image` with the defaults of
    /// [`crate::spec::testing`].
    ///
    /// # Panics
    /// `run_id` or `image` is not valid.
    pub fn builder(run_id: &str, image: &str) -> RunSpecBuilder {
        RunSpecBuilder(RunSpec {
            run_id: RunId::parse(run_id).expect("a valid run id"),
            owner: None,
            correlation: CorrelationId::parse(&format!("c-{run_id}"))
                .expect("a valid correlation id"),
            reply_event: "bus.docker.run.response".into(),
            profile: None,
            image: ImageRef::parse(image).expect("a valid image reference"),
            pull_policy: PullPolicy::Never,
            command: vec!["true".into()],
            workdir: None,
            env: BTreeMap::new(),
            mounts: Vec::new(),
            network: NetworkName::none(),
            stdin: None,
            interactive: false,
            timeout: Duration::from_secs(60),
            labels: BTreeMap::new(),
            hardening: Hardening::default(),
            max_output_bytes: 1 << 20,
            stream_output: false,
            codex_home: None,
        })
    }
}

impl RunSpecBuilder {
    /// # Panics
    /// `owner` is not a valid owner id.
    pub fn owner(mut self, owner: &str) -> Self {
        self.0.owner = Some(OwnerId::parse(owner).expect("a valid owner id"));
        self
    }

    /// # Panics
    /// `correlation` is not a valid correlation id.
    pub fn correlation(mut self, correlation: &str) -> Self {
        self.0.correlation = CorrelationId::parse(correlation).expect("a valid correlation id");
        self
    }

    pub fn reply_event(mut self, event: &str) -> Self {
        self.0.reply_event = event.to_owned();
        self
    }

    /// # Panics
    /// `profile` is not a valid profile name.
    pub fn profile(mut self, profile: &str) -> Self {
        self.0.profile = Some(ProfileName::parse(profile).expect("a valid profile name"));
        self
    }

    pub fn command(mut self, command: &[&str]) -> Self {
        self.0.command = command.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.0.env.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = timeout;
        self
    }

    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.0.max_output_bytes = bytes;
        self
    }

    pub fn build(self) -> RunSpec {
        self.0
    }
}
