//! AuthZEN search: who may, on what, which actions. Candidates come from
//! the store (every entity of the searched type) or the schema (the actions
//! that apply to the subject's and resource's types); each is decided by
//! the ordinary evaluator, so every result, asked back as an evaluation
//! with the same context, is allowed, and nothing the store holds that
//! would be allowed is missing.

use serde_json::Value;

use super::{DecisionRequest, Engine, EntityRef, RequestEntities, RequestError};

/// What is searched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Searched {
    /// subjects of `subject.type`
    Subject,
    /// resources of `resource.type`
    Resource,
    /// actions
    Action,
}

/// A search: the parts given; the searched one has its type only (an id,
/// if sent, is ignored, as the specification says).
#[derive(Debug, Clone, Copy)]
pub struct SearchQuery<'a> {
    /// the subject's type, and its id unless subjects are searched
    pub subject: (&'a str, &'a str),
    /// the action, unless actions are searched
    pub action: &'a str,
    /// the resource's type, and its id unless resources are searched
    pub resource: (&'a str, &'a str),
    /// the context every candidate is decided with
    pub context: Option<&'a Value>,
}

/// Why a search cannot be answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    /// The searched type or a named action is not the schema's.
    #[error("{0}")]
    Unknown(String),
    /// More candidates than allowed: a truncated answer would under-report.
    #[error(
        "the search has more than {limit} candidates (`search.max_candidates`); narrow it (a more specific type, or an evaluation per entity) or raise the limit"
    )]
    TooWide {
        /// the limit
        limit: usize,
    },
    /// The store cannot list the entities of a type.
    #[error("cannot list the candidates: {0}")]
    CannotList(String),
    /// The request itself is malformed (e.g. the context does not fit).
    #[error(transparent)]
    Request(#[from] RequestError),
}

impl Engine {
    /// The ids (or action names) the search finds, sorted, each allowed.
    ///
    /// # Errors
    /// [`SearchError`]: an unknown type or action, too many candidates, a
    /// store that cannot list, or a malformed context.
    pub async fn search(
        &self,
        query: &SearchQuery<'_>,
        searched: Searched,
        max_candidates: usize,
    ) -> Result<Vec<String>, SearchError> {
        let candidates = self.candidates(query, searched, max_candidates).await?;
        if candidates.len() > max_candidates {
            return Err(SearchError::TooWide {
                limit: max_candidates,
            });
        }
        let mut found = Vec::new();
        for (index, candidate) in candidates.iter().enumerate() {
            // Each action reads its own context: an action search gives each
            // the attributes its schema declares, and no others.
            let own_context = (searched == Searched::Action)
                .then(|| self.context_for(candidate, query.context))
                .flatten();
            let (subject, action, resource) = match searched {
                Searched::Subject => (candidate.as_str(), query.action, query.resource.1),
                Searched::Resource => (query.subject.1, query.action, candidate.as_str()),
                Searched::Action => (query.subject.1, candidate.as_str(), query.resource.1),
            };
            let request = DecisionRequest {
                principal: EntityRef {
                    type_name: query.subject.0,
                    id: subject,
                    properties: None,
                },
                action,
                resource: EntityRef {
                    type_name: query.resource.0,
                    id: resource,
                    properties: None,
                },
                context: own_context.as_ref().or(query.context),
                entities: RequestEntities::None,
                request_id: None,
            };
            match self.decide_unrecorded(&request).await {
                Ok(decision) if decision.allowed() => found.push(candidate.clone()),
                Ok(_) => {}
                // Each action has its own context: one this context does
                // not fit is not allowed with it.
                Err(_) if searched == Searched::Action => {}
                Err(error) => return Err(error.into()),
            }
            if index % 64 == 63 {
                // A wide search gives the request timer a chance.
                tokio::task::yield_now().await;
            }
        }
        found.sort();
        Ok(found)
    }

    /// `context` with only the attributes `action`'s context declares,
    /// when the schema's shape of it is known.
    fn context_for(&self, action: &str, context: Option<&Value>) -> Option<Value> {
        let snapshot = self.policies.current();
        let shape = snapshot
            .action(action)
            .and_then(|uid| snapshot.plan(uid))
            .and_then(|plan| plan.shape())?;
        let given = context?.as_object()?;
        let kept: serde_json::Map<String, Value> = given
            .iter()
            .filter(|(name, _)| shape.attr(name).is_some())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Some(Value::Object(kept))
    }

    async fn candidates(
        &self,
        query: &SearchQuery<'_>,
        searched: Searched,
        max: usize,
    ) -> Result<Vec<String>, SearchError> {
        let snapshot = self.policies.current();
        let ty = |name: &str| {
            snapshot
                .entity_type(name)
                .cloned()
                .ok_or_else(|| SearchError::Unknown(snapshot.unknown_type("entity type", name)))
        };
        let (subject_type, resource_type) = (ty(query.subject.0)?, ty(query.resource.0)?);
        if searched != Searched::Action && snapshot.action(query.action).is_none() {
            return Err(SearchError::Unknown(snapshot.unknown_action(query.action)));
        }
        match searched {
            Searched::Subject => self.listed(&subject_type, max).await,
            Searched::Resource => self.listed(&resource_type, max).await,
            Searched::Action => Ok(snapshot
                .schema()
                .actions_for_principal_and_resource(&subject_type, &resource_type)
                .map(|action| action.id().unescaped().to_owned())
                .collect()),
        }
    }

    async fn listed(
        &self,
        ty: &cedar_policy::EntityTypeName,
        max: usize,
    ) -> Result<Vec<String>, SearchError> {
        self.store
            .list(ty, max)
            .await
            .map_err(SearchError::CannotList)
    }
}
