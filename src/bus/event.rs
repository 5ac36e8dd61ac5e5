//! The entity change event: what the system of record publishes when it
//! changes an entity, and the revision check that notices a missed one.
//!
//! ```json
//! {"uids": [{"type": "Brokerage::User", "id": "grace"}], "revision": 42}
//! {"all": true, "revision": 43}
//! ```
//!
//! `revision` is optional; when present it increases by one per event on a
//! subject, so a jump means an event was missed.

use serde::{Deserialize, Serialize};

/// Largest event read; a larger one is ignored (and counted).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Most uids one event may name; more is ignored (and counted): a bigger
/// change is `{"all": true}`.
pub const MAX_EVENT_UIDS: usize = 10_000;

/// An entity named by an event, as callers write types (`user` or
/// `Brokerage::User`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventUid {
    /// the entity type
    #[serde(rename = "type")]
    pub type_name: String,
    /// the entity id
    pub id: String,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// these entities
    Uids(Vec<EventUid>),
    /// anything: forget everything
    All,
}

/// One change event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// what changed
    pub changed: Changed,
    /// the publisher's sequence number on the subject, if it keeps one
    pub revision: Option<u64>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uids: Option<Vec<EventUid>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<u64>,
}

/// Why an event was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// over [`MAX_EVENT_BYTES`] or [`MAX_EVENT_UIDS`]
    Oversized,
    /// not the event format (or ambiguous: `uids` and `all` both, neither,
    /// an empty `uids`, `all: false`)
    Malformed,
}

impl Ignored {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
        }
    }
}

impl ChangeEvent {
    /// Reads one event.
    ///
    /// # Errors
    /// [`Ignored`]: too big, or not exactly one of the two forms.
    pub fn parse(payload: &[u8]) -> Result<Self, Ignored> {
        if payload.len() > MAX_EVENT_BYTES {
            return Err(Ignored::Oversized);
        }
        let wire: Wire = serde_json::from_slice(payload).map_err(|_| Ignored::Malformed)?;
        let changed = match (wire.uids, wire.all) {
            (Some(uids), None) if !uids.is_empty() => {
                if uids.len() > MAX_EVENT_UIDS {
                    return Err(Ignored::Oversized);
                }
                Changed::Uids(uids)
            }
            (None, Some(true)) => Changed::All,
            _ => return Err(Ignored::Malformed),
        };
        Ok(Self {
            changed,
            revision: wire.revision,
        })
    }

    /// The event as published.
    pub fn encode(&self) -> Vec<u8> {
        let wire = match &self.changed {
            Changed::Uids(uids) => Wire {
                uids: Some(uids.clone()),
                all: None,
                revision: self.revision,
            },
            Changed::All => Wire {
                uids: None,
                all: Some(true),
                revision: self.revision,
            },
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

/// How an event's revision follows the last one seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// the next one, or the first, or none given
    InOrder,
    /// one or more were skipped, or the publisher restarted its count:
    /// something may have been missed
    Gap,
    /// seen before (a redelivery): harmless to apply again
    Repeat,
}

/// The last revision seen on the subject.
#[derive(Debug, Default)]
pub struct Revisions {
    last: Option<u64>,
}

impl Revisions {
    /// Notes `revision` and says how it follows the last.
    pub fn observe(&mut self, revision: Option<u64>) -> Continuity {
        let Some(revision) = revision else {
            return Continuity::InOrder;
        };
        let continuity = match self.last {
            None => Continuity::InOrder,
            Some(last) if revision == last.saturating_add(1) => Continuity::InOrder,
            Some(last) if revision == last => Continuity::Repeat,
            // Ahead by more than one: missed. Behind: the publisher's count
            // restarted, and what it did meanwhile is unknown.
            Some(_) => Continuity::Gap,
        };
        if continuity != Continuity::Repeat {
            self.last = Some(revision);
        }
        continuity
    }

    /// Forgets the last revision (after a reconnect, when everything was
    /// invalidated anyway).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_read_and_round_trip() {
        let event =
            ChangeEvent::parse(br#"{"uids": [{"type": "user", "id": "grace"}], "revision": 42}"#)
                .unwrap();
        assert_eq!(
            event.changed,
            Changed::Uids(vec![EventUid {
                type_name: "user".to_owned(),
                id: "grace".to_owned()
            }])
        );
        assert_eq!(event.revision, Some(42));
        assert_eq!(ChangeEvent::parse(&event.encode()).unwrap(), event);
        let all = ChangeEvent::parse(br#"{"all": true}"#).unwrap();
        assert_eq!((all.changed, all.revision), (Changed::All, None));
    }

    #[test]
    fn anything_else_is_ignored_never_guessed() {
        for malformed in [
            &br#"{"all": false}"#[..],
            br#"{"uids": []}"#,
            br#"{"uids": [{"type": "user", "id": "a"}], "all": true}"#,
            br#"{}"#,
            br#"{"uids": [{"type": "user"}]}"#,
            br#"{"uids": [{"type": "user", "id": "a", "extra": 1}]}"#,
            br#"{"all": true, "revision": -1}"#,
            br#"{"all": true, "surprise": 1}"#,
            b"not json",
            b"",
        ] {
            assert_eq!(
                ChangeEvent::parse(malformed),
                Err(Ignored::Malformed),
                "{}",
                String::from_utf8_lossy(malformed)
            );
        }
        let big = format!(
            r#"{{"all": true, "pad": "{}"}}"#,
            "x".repeat(MAX_EVENT_BYTES)
        );
        assert_eq!(ChangeEvent::parse(big.as_bytes()), Err(Ignored::Oversized));
        let many: Vec<EventUid> = (0..=MAX_EVENT_UIDS)
            .map(|i| EventUid {
                type_name: "user".to_owned(),
                id: i.to_string(),
            })
            .collect();
        let many = ChangeEvent {
            changed: Changed::Uids(many),
            revision: None,
        };
        assert_eq!(ChangeEvent::parse(&many.encode()), Err(Ignored::Oversized));
    }

    #[test]
    fn a_jump_or_a_restart_of_the_revision_is_a_gap() {
        let mut revisions = Revisions::default();
        assert_eq!(revisions.observe(Some(7)), Continuity::InOrder, "the first");
        assert_eq!(revisions.observe(Some(8)), Continuity::InOrder);
        assert_eq!(revisions.observe(Some(8)), Continuity::Repeat);
        assert_eq!(revisions.observe(None), Continuity::InOrder, "unnumbered");
        assert_eq!(revisions.observe(Some(10)), Continuity::Gap, "9 was missed");
        assert_eq!(revisions.observe(Some(11)), Continuity::InOrder);
        assert_eq!(revisions.observe(Some(1)), Continuity::Gap, "a restart");
        assert_eq!(revisions.observe(Some(2)), Continuity::InOrder);
        revisions.reset();
        assert_eq!(revisions.observe(Some(40)), Continuity::InOrder);
    }
}
