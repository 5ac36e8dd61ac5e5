//! AuthZEN batches: split at the server's limit, sent in order, each
//! answer checked for its length and for where a short-circuit stopped.

use serde_json::{Map, Value, json};

use crate::call::{CallOptions, Caller};
use crate::error::Error;
use crate::model::Decision;

/// AuthZEN's `evaluations_semantic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Semantic {
    /// every item decided
    #[default]
    ExecuteAll,
    /// the answer stops after the first deny
    DenyOnFirstDeny,
    /// the answer stops after the first permit
    PermitOnFirstPermit,
}

impl Semantic {
    fn name(self) -> &'static str {
        match self {
            Self::ExecuteAll => "execute_all",
            Self::DenyOnFirstDeny => "deny_on_first_deny",
            Self::PermitOnFirstPermit => "permit_on_first_permit",
        }
    }

    /// Whether `decision` is the one this semantic stops at.
    fn stops_at(self, decision: bool) -> bool {
        match self {
            Self::ExecuteAll => false,
            Self::DenyOnFirstDeny => !decision,
            Self::PermitOnFirstPermit => decision,
        }
    }
}

/// Decides `items` over `defaults` in requests of at most the caller's
/// `max_batch_items`; after a chunk that stopped, nothing more is sent.
pub(crate) async fn evaluations(
    caller: &Caller,
    defaults: &Value,
    items: &[Value],
    semantic: Semantic,
) -> Result<Vec<Decision>, Error> {
    let mut decided = Vec::with_capacity(items.len());
    // One call: every chunk within its deadline, one retry among them.
    let mut budget = caller.budget();
    for chunk in items.chunks(caller.max_batch_items) {
        let mut body: Map<String, Value> = defaults.as_object().cloned().unwrap_or_default();
        body.insert("evaluations".to_owned(), Value::Array(chunk.to_vec()));
        // Always said: the semantic checked is the one the server applies.
        body.insert(
            "options".to_owned(),
            json!({"evaluations_semantic": semantic.name()}),
        );
        let answer = caller
            .post_within(
                "/access/v1/evaluations",
                &Value::Object(body),
                &CallOptions::default(),
                &mut budget,
            )
            .await?;
        let decisions = answer
            .get("evaluations")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Protocol(format!("no `evaluations` array in {answer}")))?
            .iter()
            .map(Decision::from_answer)
            .collect::<Result<Vec<_>, _>>()?;
        let stopped = check(semantic, chunk.len(), &decisions)?;
        decided.extend(decisions);
        if stopped {
            break;
        }
    }
    Ok(decided)
}

/// Checks an answer to `sent` items; whether the semantic stopped in it.
fn check(semantic: Semantic, sent: usize, decisions: &[Decision]) -> Result<bool, Error> {
    let wrong = |why: String| {
        Err(Error::Protocol(format!(
            "a batch of {sent} answered {}: {why}",
            decisions.len()
        )))
    };
    if decisions.len() > sent || (semantic == Semantic::ExecuteAll && decisions.len() != sent) {
        return wrong("one decision per item, in order".to_owned());
    }
    let stops: Vec<usize> = decisions
        .iter()
        .enumerate()
        .filter(|(_, d)| semantic.stops_at(d.decision))
        .map(|(i, _)| i)
        .collect();
    match stops.first() {
        Some(&first) if first + 1 != decisions.len() => wrong(format!(
            "{} stops at item {first}, yet more followed",
            semantic.name()
        )),
        Some(_) => Ok(true),
        None if decisions.len() < sent => wrong(format!(
            "{} stopped without a stopping decision",
            semantic.name()
        )),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(decisions: &[bool]) -> Vec<Decision> {
        decisions
            .iter()
            .map(|&decision| Decision {
                decision,
                reasons: Vec::new(),
                errors: Vec::new(),
                policy_version: None,
                summary: None,
            })
            .collect()
    }

    #[test]
    fn an_answer_is_checked_for_length_and_where_it_stopped() {
        use Semantic::*;
        assert_eq!(
            check(ExecuteAll, 2, &decided(&[true, false])).ok(),
            Some(false)
        );
        assert!(
            check(ExecuteAll, 3, &decided(&[true, false])).is_err(),
            "short"
        );
        assert!(
            check(ExecuteAll, 1, &decided(&[true, false])).is_err(),
            "long"
        );
        assert_eq!(
            check(DenyOnFirstDeny, 3, &decided(&[true, false])).ok(),
            Some(true)
        );
        assert_eq!(
            check(DenyOnFirstDeny, 2, &decided(&[true, true])).ok(),
            Some(false)
        );
        assert!(
            check(DenyOnFirstDeny, 3, &decided(&[false, true])).is_err(),
            "went on after a deny"
        );
        assert!(
            check(DenyOnFirstDeny, 3, &decided(&[true, true])).is_err(),
            "stopped on an allow"
        );
        assert_eq!(
            check(PermitOnFirstPermit, 3, &decided(&[false, true])).ok(),
            Some(true)
        );
        assert!(check(PermitOnFirstPermit, 3, &decided(&[true, false])).is_err());
    }
}
