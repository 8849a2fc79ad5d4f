//! Wall-clock timers per op and per training phase, for finding where a step goes: off
//! unless `SPADE_PROFILE` is set, then every [`scope`] adds its duration under its name.
//! Scopes nest (a phase contains the ops it runs), so the totals are not meant to add up.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

static ENABLED: LazyLock<bool> = LazyLock::new(|| std::env::var_os("SPADE_PROFILE").is_some());
static TOTALS: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Times until dropped; a no-op when profiling is off.
pub struct Scope(Option<(&'static str, Instant)>);

pub fn scope(name: &'static str) -> Scope {
    Scope(ENABLED.then(|| (name, Instant::now())))
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some((name, start)) = self.0 {
            let elapsed = start.elapsed();
            let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
            let entry = totals.entry(name).or_default();
            entry.0 += elapsed;
            entry.1 += 1;
        }
    }
}

pub fn enabled() -> bool {
    *ENABLED
}

/// The totals so far, `(name, time, calls)`, longest first; and starts afresh.
pub fn take() -> Vec<(&'static str, Duration, u64)> {
    let totals = std::mem::take(&mut *TOTALS.lock().unwrap_or_else(|e| e.into_inner()));
    let mut rows: Vec<_> = totals.into_iter().map(|(n, (t, c))| (n, t, c)).collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    rows
}
