//! Placement: which engine of the pool a new run goes to (docs/protocol.md §5
//! "Engine pool"). Pure: the application counts, this decides.
//!
//! The rule: among the engines that can be reached and have room under the
//! optional per-engine cap, the one with the fewest active runs; ties go to
//! the engine configured first, so every worker with the same pool and the
//! same view picks the same engine (a duplicate delivery then meets its twin
//! on one engine, where the container name is unique).

use std::num::NonZeroUsize;

/// What the application knows about one engine when a run is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLoad {
    /// Whether the engine answered (or is not known to be down).
    pub reachable: bool,
    /// Active runs on it: its active managed containers, from every
    /// worker, plus runs this worker placed there and has not created yet.
    pub active: usize,
}

/// Why no engine can take the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// No engine of the pool can be reached.
    Unreachable,
    /// Every reachable engine holds `cap` active runs.
    Full { cap: NonZeroUsize },
}

/// The index of the engine a new run goes to.
///
/// # Errors
/// [`NoRoom::Unreachable`] when no engine is reachable (or the pool is
/// empty), [`NoRoom::Full`] when every reachable engine is at `cap`.
pub fn choose(loads: &[EngineLoad], cap: Option<NonZeroUsize>) -> Result<usize, NoRoom> {
    let reachable = || loads.iter().enumerate().filter(|(_, l)| l.reachable);
    let chosen = reachable()
        .filter(|(_, l)| cap.is_none_or(|c| l.active < c.get()))
        // `min_by_key` keeps the first of equal keys: configured order.
        .min_by_key(|(_, l)| l.active)
        .map(|(i, _)| i);
    match (chosen, cap) {
        (Some(i), _) => Ok(i),
        (None, Some(cap)) if reachable().next().is_some() => Err(NoRoom::Full { cap }),
        (None, _) => Err(NoRoom::Unreachable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(active: usize) -> EngineLoad {
        EngineLoad {
            reachable: true,
            active,
        }
    }

    fn down(active: usize) -> EngineLoad {
        EngineLoad {
            reachable: false,
            active,
        }
    }

    fn cap(n: usize) -> Option<NonZeroUsize> {
        NonZeroUsize::new(n)
    }

    #[test]
    fn the_fewest_active_runs_win() {
        assert_eq!(choose(&[up(3), up(1), up(2)], None), Ok(1));
        assert_eq!(choose(&[up(0)], None), Ok(0));
    }

    #[test]
    fn ties_go_to_the_engine_configured_first() {
        assert_eq!(choose(&[up(2), up(1), up(1)], None), Ok(1));
        assert_eq!(choose(&[up(0), up(0)], None), Ok(0));
    }

    #[test]
    fn unreachable_engines_are_skipped_however_idle() {
        assert_eq!(choose(&[down(0), up(5)], None), Ok(1));
        assert_eq!(choose(&[down(0), down(0)], None), Err(NoRoom::Unreachable));
        assert_eq!(choose(&[], None), Err(NoRoom::Unreachable));
    }

    #[test]
    fn the_per_engine_cap_skips_full_engines() {
        assert_eq!(choose(&[up(2), up(3)], cap(3)), Ok(0));
        assert_eq!(choose(&[up(3), up(2)], cap(3)), Ok(1));
        assert_eq!(
            choose(&[up(3), up(4), down(0)], cap(3)),
            Err(NoRoom::Full {
                cap: cap(3).unwrap()
            })
        );
        // Nothing reachable is "unreachable", not "full".
        assert_eq!(choose(&[down(0)], cap(1)), Err(NoRoom::Unreachable));
    }

    #[test]
    fn spreading_a_burst_alternates_between_equal_engines() {
        let mut loads = [up(0), up(0), up(0)];
        let mut picks = Vec::new();
        for _ in 0..6 {
            let i = choose(&loads, None).unwrap();
            loads[i].active += 1;
            picks.push(i);
        }
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
