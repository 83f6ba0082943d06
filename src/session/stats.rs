//! Totals on request: the sum, the largest value and the count of numeric fields (JSON
//! pointers) across the live sessions' copies of one per-session file. Each session keeps its
//! own numbers; a team view adds them up here, without contaminating any of them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::{Number, Value};

use super::{SessionState, Sessions, session_copy};
use crate::error::{Error, Result};

/// The largest copy read for totals (a state file is far smaller).
const COPY_CAP: u64 = 256 * 1024 * 1024;

/// The totals of one field.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldTotals {
    /// The sum over the sessions that have a number there.
    pub sum: Number,
    /// The largest of those numbers (null when none has one).
    pub max: Option<Number>,
    /// How many sessions have a number there.
    pub sessions: usize,
}

/// What `session stats` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// The per-session file read, relative to the repository root (the shared name).
    pub file: String,
    /// Live sessions.
    pub live: usize,
    /// Live sessions whose copy of the file exists and parses.
    pub read: usize,
    /// Each field asked for (or, when none was, every numeric top-level field found).
    pub fields: BTreeMap<String, FieldTotals>,
}

/// A running total: exact while every value is an integer, a float once one is not.
#[derive(Default)]
struct Acc {
    int_sum: i128,
    float_sum: f64,
    all_int: bool,
    max: Option<Number>,
    max_f: f64,
    count: usize,
}

impl Acc {
    fn add(&mut self, n: &Number) {
        if self.count == 0 {
            self.all_int = true;
        }
        let f = n.as_f64().unwrap_or(0.0);
        match n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)) {
            Some(i) if self.all_int => self.int_sum = self.int_sum.saturating_add(i),
            _ => self.all_int = false,
        }
        self.float_sum += f;
        if self.max.is_none() || f > self.max_f {
            self.max = Some(n.clone());
            self.max_f = f;
        }
        self.count += 1;
    }

    fn totals(self) -> FieldTotals {
        let exact = i64::try_from(self.int_sum).ok().map(Number::from);
        let sum = match exact {
            Some(n) if self.all_int || self.count == 0 => n,
            _ => Number::from_f64(self.float_sum).unwrap_or_else(|| Number::from(0)),
        };
        FieldTotals {
            sum,
            max: self.max,
            sessions: self.count,
        }
    }
}

impl Sessions {
    /// Totals of `fields` (RFC 6901 pointers; none: every numeric top-level field) across the
    /// live sessions' copies of `file` (the shared file's name, listed in `per_session`).
    pub async fn stats(
        &self,
        per_session: &[String],
        file: &str,
        fields: &[String],
    ) -> Result<Stats> {
        for f in fields {
            crate::state::parse_pointer(f)?;
        }
        if !per_session.iter().any(|p| p == file) {
            return Err(Error::usage(format!(
                "{file} is not listed in `per_session` in {}: sessions keep no copies of it",
                crate::settings::CONFIG_FILE
            )));
        }
        let live: Vec<String> = self
            .list()
            .await?
            .into_iter()
            .filter(|s| s.state == SessionState::Live)
            .map(|s| s.entry.id)
            .collect();
        let mut acc: BTreeMap<String, Acc> =
            fields.iter().map(|f| (f.clone(), Acc::default())).collect();
        let mut read = 0;
        // Through the handle of `.claude/sessions` (a symlinked one is refused, 73): a copy
        // that is a link, FIFO or device, or past the cap, is skipped like an unreadable one.
        let sessions_dir = super::gc::open_sessions_dir(&self.root)?;
        for id in &live {
            let (Some(rel), Some(dir)) =
                (session_copy(per_session, Some(id), file)?, &sessions_dir)
            else {
                continue;
            };
            let below = Path::new(&rel)
                .strip_prefix(crate::settings::SESSIONS_DIR)
                .unwrap_or(Path::new(&rel));
            let (Some(parent), Some(name)) = (below.parent(), below.file_name()) else {
                continue;
            };
            let Some(doc) = dir
                .open_dir(parent)
                .ok()
                .flatten()
                .and_then(|d| d.read_capped(name, COPY_CAP).ok().flatten())
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            read += 1;
            if fields.is_empty() {
                for (k, v) in doc.as_object().into_iter().flatten() {
                    if let Value::Number(n) = v {
                        let key = format!("/{}", k.replace('~', "~0").replace('/', "~1"));
                        acc.entry(key).or_default().add(n);
                    }
                }
            }
            for f in fields {
                if let Some(Value::Number(n)) = doc.pointer(f)
                    && let Some(a) = acc.get_mut(f)
                {
                    a.add(n);
                }
            }
        }
        Ok(Stats {
            file: file.to_owned(),
            live: live.len(),
            read,
            fields: acc.into_iter().map(|(k, a)| (k, a.totals())).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_stay_exact_for_integers_and_turn_float_otherwise() {
        let mut a = Acc::default();
        a.add(&Number::from(9_007_199_254_740_993_i64));
        a.add(&Number::from(1));
        let t = a.totals();
        assert_eq!(t.sum.to_string(), "9007199254740994");
        assert_eq!(t.max.unwrap().to_string(), "9007199254740993");
        let mut a = Acc::default();
        a.add(&Number::from(2));
        a.add(&Number::from_f64(0.5).unwrap());
        let t = a.totals();
        assert_eq!(t.sum.as_f64(), Some(2.5));
        assert_eq!(t.sessions, 2);
        assert_eq!(Acc::default().totals().sum.to_string(), "0");
    }
}
