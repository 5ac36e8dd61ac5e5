//! Decision-log volume: the `log.keep` rules decide, line by line and for
//! every sink at once (the log and the action history), whether a line is
//! kept. The first rule matching the line's decision and action (or one of
//! the action's groups) keeps it, or keeps a random share of such lines; a
//! line no rule matches is kept. Every deny is kept: a rule that could
//! sample one is refused. Counted per rule in `mandate_log_lines_total`.

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use super::metrics;

/// One `log.keep` rule, as configured.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeepRule {
    /// the rule's name in `mandate_log_lines_total{rule}`
    pub name: String,
    /// `allow` or `deny`; absent: either
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// action ids or action groups; absent or empty: every action
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// the share of matching lines kept, from 0 to 1
    pub share: f64,
}

struct Compiled {
    /// `Some(true)`: allows only
    allowed: Option<bool>,
    actions: Vec<String>,
    share: f64,
    kept: IntCounter,
    sampled_out: IntCounter,
}

/// The rules, checked and with their counters resolved.
pub struct KeepRules {
    rules: Vec<Compiled>,
    /// the lines no rule matched (every line, with no rules)
    kept_by_default: IntCounter,
}

impl std::fmt::Debug for KeepRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepRules")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl KeepRules {
    /// Checks `rules`: names unique and plain, `decision` one of the two,
    /// `share` within 0 to 1, and a share below 1 only for allows (every
    /// deny is kept). `known` says whether an action id or group exists.
    ///
    /// # Errors
    /// Every mistake at once, each naming its rule.
    pub fn new(
        rules: &[KeepRule],
        known: &dyn Fn(&str) -> Result<(), String>,
    ) -> Result<Self, String> {
        let mut mistakes = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (n, rule) in rules.iter().enumerate() {
            let at = format!("`log.keep` rule {} (`{}`)", n + 1, rule.name);
            if rule.name.is_empty()
                || rule.name == "default"
                || !rule
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            {
                mistakes.push(format!(
                    "{at}: `name` is letters, digits, `_` and `-`, and not `default` (the lines no rule matches)"
                ));
            }
            if !names.insert(rule.name.as_str()) {
                mistakes.push(format!("{at}: another rule has this name"));
            }
            if !matches!(rule.decision.as_deref(), None | Some("allow" | "deny")) {
                mistakes.push(format!(
                    "{at}: `decision` is `allow` or `deny` (or absent: either)"
                ));
            }
            if !(0.0..=1.0).contains(&rule.share) {
                mistakes.push(format!(
                    "{at}: `share` is from 0 to 1, e.g. 0.05 keeps one line in 20"
                ));
            } else if rule.share < 1.0 && rule.decision.as_deref() != Some("allow") {
                mistakes.push(format!(
                    "{at}: a share below 1 can drop denies, and every deny is kept: add `decision = \"allow\"`"
                ));
            }
            for action in &rule.actions {
                if let Err(unknown) = known(action) {
                    mistakes.push(format!("{at}: {unknown}"));
                }
            }
        }
        if !mistakes.is_empty() {
            return Err(mistakes.join("\n"));
        }
        let counter =
            |name: &str, outcome: &str| metrics().log_lines.with_label_values(&[name, outcome]);
        Ok(Self {
            rules: rules
                .iter()
                .map(|rule| Compiled {
                    allowed: rule.decision.as_deref().map(|d| d == "allow"),
                    actions: rule.actions.clone(),
                    share: rule.share,
                    kept: counter(&rule.name, "kept"),
                    sampled_out: counter(&rule.name, "sampled_out"),
                })
                .collect(),
            kept_by_default: counter("default", "kept"),
        })
    }

    /// No rules: every line kept (counted under `default`).
    pub fn keep_all() -> Self {
        Self {
            rules: Vec::new(),
            kept_by_default: metrics().log_lines.with_label_values(&["default", "kept"]),
        }
    }

    /// Whether a rule names actions or groups: only then does a line need
    /// its action's groups looked up.
    pub fn names_actions(&self) -> bool {
        self.rules.iter().any(|rule| !rule.actions.is_empty())
    }

    /// Whether the line of a decision (`allowed`, `action`, the action's
    /// `groups`) is kept, counted under the rule that judged it.
    pub fn keep(&self, allowed: bool, action: &str, groups: &[String]) -> bool {
        let rule = self.rules.iter().find(|rule| {
            rule.allowed.is_none_or(|a| a == allowed)
                && (rule.actions.is_empty()
                    || rule
                        .actions
                        .iter()
                        .any(|named| named == action || groups.contains(named)))
        });
        let Some(rule) = rule else {
            self.kept_by_default.inc();
            return true;
        };
        // A deny never reaches a share below 1 (refused at load).
        let kept = rule.share >= 1.0 || (allowed && fastrand::f64() < rule.share);
        if kept {
            rule.kept.inc();
        } else {
            rule.sampled_out.inc();
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, decision: Option<&str>, actions: &[&str], share: f64) -> KeepRule {
        KeepRule {
            name: name.to_owned(),
            decision: decision.map(str::to_owned),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            share,
        }
    }

    fn known(name: &str) -> Result<(), String> {
        ["view_account", "withdraw", "funding", "users"]
            .contains(&name)
            .then_some(())
            .ok_or_else(|| format!("no action or group `{name}`"))
    }

    #[test]
    fn the_first_matching_rule_decides_and_denies_and_money_are_always_kept() {
        let rules = KeepRules::new(
            &[
                rule("funding", None, &["funding"], 1.0),
                rule("reads", Some("allow"), &["view_account"], 0.0),
            ],
            &known,
        )
        .unwrap();
        let funding = ["funding".to_owned()];
        for _ in 0..100 {
            assert!(rules.keep(true, "withdraw", &funding));
            assert!(rules.keep(false, "view_account", &[]), "a deny is kept");
            assert!(
                !rules.keep(true, "view_account", &[]),
                "share 0 keeps no allowed read"
            );
            assert!(rules.keep(true, "place_order", &[]), "no rule: kept");
        }
        assert!(KeepRules::keep_all().keep(true, "view_account", &[]));
    }

    #[test]
    fn a_share_keeps_about_that_share_of_allowed_lines() {
        let rules = KeepRules::new(&[rule("sampled", Some("allow"), &[], 0.25)], &known).unwrap();
        let kept = (0..20_000)
            .filter(|_| rules.keep(true, "view_account", &[]))
            .count();
        assert!((4_000..6_000).contains(&kept), "{kept} of 20000 at 0.25");
    }

    #[test]
    fn a_rule_that_could_drop_a_deny_or_names_nothing_real_is_refused_with_every_mistake() {
        let error = KeepRules::new(
            &[
                rule("reads", None, &["view_account"], 0.5),
                rule("bad name", Some("maybe"), &["withdrw"], 2.0),
                rule("reads", Some("allow"), &[], 1.0),
            ],
            &known,
        )
        .unwrap_err();
        for expected in [
            "rule 1 (`reads`): a share below 1 can drop denies",
            "rule 2 (`bad name`): `name` is letters",
            "`decision` is `allow` or `deny`",
            "`share` is from 0 to 1",
            "no action or group `withdrw`",
            "rule 3 (`reads`): another rule has this name",
        ] {
            assert!(error.contains(expected), "{expected:?} in {error}");
        }
    }
}
