//! Policy coverage of a test run: for each policy of the pack, the passing
//! cases in which it determined the decision and those in which its
//! condition was evaluated (its scope matched), the policies never
//! exercised, and the share of policies that determined some case. A
//! policy no case determines is a rule no test would miss if it went.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;

use super::CaseResult;

/// Coverage gathered over the cases of a run.
#[derive(Debug, Default)]
pub struct Coverage {
    /// per policy id: the cases it determined, and the cases that evaluated it
    by_policy: BTreeMap<String, (Vec<String>, Vec<String>)>,
}

impl Coverage {
    /// Coverage of `policies` (the pack's policy ids), no case counted yet.
    pub fn new(policies: impl IntoIterator<Item = String>) -> Self {
        Self {
            by_policy: policies
                .into_iter()
                .map(|id| (id, (Vec::new(), Vec::new())))
                .collect(),
        }
    }

    /// Counts one case; a failing case proves nothing and is not counted.
    pub fn add(&mut self, case: &CaseResult) {
        if case.failure.is_some() {
            return;
        }
        let label = format!("{} / {}", case.suite, case.name);
        for id in &case.determined {
            if let Some((cases, _)) = self.by_policy.get_mut(id) {
                cases.push(label.clone());
            }
        }
        for id in &case.evaluated {
            if let Some((_, evaluated)) = self.by_policy.get_mut(id) {
                evaluated.push(label.clone());
            }
        }
    }

    /// The share of policies that determined at least one case, in percent
    /// (100 for a pack without policies).
    pub fn percent(&self) -> f64 {
        let total = self.by_policy.len();
        if total == 0 {
            return 100.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let share = self.covered() as f64 * 100.0 / total as f64;
        share
    }

    fn covered(&self) -> usize {
        self.by_policy
            .values()
            .filter(|(cases, _)| !cases.is_empty())
            .count()
    }

    /// The policies that determined no case.
    pub fn uncovered(&self) -> Vec<&str> {
        self.by_policy
            .iter()
            .filter(|(_, (cases, _))| cases.is_empty())
            .map(|(id, _)| id.as_str())
            .collect()
    }

    fn never_evaluated(&self) -> Vec<&str> {
        self.by_policy
            .iter()
            .filter(|(_, (cases, evaluated))| cases.is_empty() && evaluated.is_empty())
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// A table for a person.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "coverage: {} of {} policies ({:.1}%) determined at least one case",
            self.covered(),
            self.by_policy.len(),
            self.percent()
        )?;
        let width = self
            .by_policy
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(6)
            .max(6);
        writeln!(out, "  {:width$}  determined  evaluated", "policy")?;
        for (id, (cases, evaluated)) in &self.by_policy {
            writeln!(
                out,
                "  {id:width$}  {:>10}  {:>9}",
                cases.len(),
                evaluated.len()
            )?;
        }
        let uncovered = self.uncovered();
        if !uncovered.is_empty() {
            writeln!(out, "  determined no case: {}", uncovered.join(", "))?;
        }
        let never = self.never_evaluated();
        if !never.is_empty() {
            writeln!(
                out,
                "  never exercised (not even evaluated): {}",
                never.join(", ")
            )?;
        }
        Ok(())
    }

    /// The coverage as one JSON object, `{"coverage": …}`.
    pub fn to_json(&self) -> serde_json::Value {
        let by_policy: serde_json::Map<String, serde_json::Value> = self
            .by_policy
            .iter()
            .map(|(id, (cases, evaluated))| {
                (
                    id.clone(),
                    json!({"determined": cases, "evaluated": evaluated}),
                )
            })
            .collect();
        json!({"coverage": {
            "policies": self.by_policy.len(),
            "covered": self.covered(),
            "percent": self.percent(),
            "by_policy": by_policy,
            "uncovered": self.uncovered(),
            "never_exercised": self.never_evaluated(),
        }})
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::tools::suite::Expect;

    fn case(name: &str, determined: &[&str], evaluated: &[&str], passed: bool) -> CaseResult {
        CaseResult {
            suite: "s".to_owned(),
            name: name.to_owned(),
            file: PathBuf::from("s.yaml"),
            line: 1,
            rule: None,
            expect: Expect::Allow,
            failure: (!passed).then(|| "x".to_owned()),
            determined: determined.iter().map(|s| (*s).to_owned()).collect(),
            evaluated: evaluated.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_policy_counts_when_a_passing_case_is_decided_by_it() {
        let mut coverage = Coverage::new(["A".to_owned(), "B".to_owned(), "C".to_owned()]);
        coverage.add(&case("one", &["A"], &["A", "B"], true));
        coverage.add(&case("two", &["C"], &["C"], false));
        assert_eq!(
            coverage.uncovered(),
            ["B", "C"],
            "a failing case counts for nothing"
        );
        assert_eq!(coverage.never_evaluated(), ["C"]);
        assert!((coverage.percent() - 100.0 / 3.0).abs() < 1e-9);
        let json = coverage.to_json();
        assert_eq!(
            json["coverage"]["by_policy"]["A"]["determined"][0],
            "s / one"
        );
        assert_eq!(
            json["coverage"]["by_policy"]["B"]["evaluated"],
            json!(["s / one"])
        );
        coverage.add(&case("three", &["B", "C", "unknown"], &[], true));
        assert!(coverage.uncovered().is_empty());
        assert!((coverage.percent() - 100.0).abs() < 1e-9);
    }
}
