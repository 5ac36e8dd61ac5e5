//! AuthZEN search, page after page: a stream of results that follows
//! `page.next_token`, and the actions an action search skipped.

use std::collections::VecDeque;
use std::sync::Arc;

use serde_json::Value;

use crate::call::Caller;
use crate::error::Error;
use crate::model::Request;

/// An action an action search could not decide with the context given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// the action
    pub name: String,
    /// what the context lacks
    pub reason: String,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// `{type, id}` or `{name}`
    pub results: Vec<Value>,
    /// the next page's token; `None` on the last page
    pub next_token: Option<String>,
    /// actions not decided for lack of context (action search)
    pub skipped: Vec<Skipped>,
}

/// One page of a `kind` search (`subject`, `resource`, `action`).
pub(crate) async fn page(
    caller: &Caller,
    kind: &str,
    request: &Request,
    token: Option<&str>,
) -> Result<SearchPage, Error> {
    let mut body = request.to_json();
    if let (Some(page), Some(object)) = (request.page(token), body.as_object_mut()) {
        object.insert("page".to_owned(), page);
    }
    let answer = caller
        .post(&format!("/access/v1/search/{kind}"), &body, request.call())
        .await?;
    let results = answer
        .get("results")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| Error::Protocol(format!("no `results` array in {answer}")))?;
    let next_token = match answer.pointer("/page/next_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) if token.is_empty() => None,
        Some(Value::String(token)) => Some(token.clone()),
        Some(other) => {
            return Err(Error::Protocol(format!(
                "`page.next_token` is not a string: {other}"
            )));
        }
    };
    let shaped = |result: &Value| match kind {
        "action" => result.get("name").is_some_and(Value::is_string),
        _ => {
            result.get("type").is_some_and(Value::is_string)
                && result.get("id").is_some_and(Value::is_string)
        }
    };
    if let Some(odd) = results.iter().find(|r| !shaped(r)) {
        return Err(Error::Protocol(format!(
            "a {kind} search result shaped {odd}"
        )));
    }
    let skipped = answer
        .pointer("/context/skipped")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|item| Skipped {
                    name: text(item, "name"),
                    reason: text(item, "reason"),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(SearchPage {
        results,
        next_token,
        skipped,
    })
}

fn text(item: &Value, key: &str) -> String {
    item.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Where a stream of results is.
struct Cursor {
    caller: Arc<Caller>,
    kind: &'static str,
    request: Request,
    held: VecDeque<Value>,
    /// `None` before the first page; `Some(None)` after the last
    next: Option<Option<String>>,
    /// every token followed: a server that repeats one would loop forever
    seen: std::collections::HashSet<String>,
    /// pages in a row that brought no result
    empty: usize,
}

/// Empty pages in a row a search follows before it calls the server's
/// paging broken.
const MAX_EMPTY_PAGES: usize = 3;

/// Every result of a `kind` search, fetching pages as it goes; an error
/// ends the stream.
pub(crate) fn results(
    caller: Arc<Caller>,
    kind: &'static str,
    request: &Request,
) -> impl futures_util::Stream<Item = Result<Value, Error>> + use<> {
    let cursor = Cursor {
        caller,
        kind,
        request: request.clone(),
        held: VecDeque::new(),
        next: None,
        seen: std::collections::HashSet::new(),
        empty: 0,
    };
    futures_util::stream::unfold(Some(cursor), |state| async move {
        let mut cursor = state?;
        loop {
            if let Some(result) = cursor.held.pop_front() {
                return Some((Ok(result), Some(cursor)));
            }
            let token = match &cursor.next {
                Some(None) => return None,
                Some(Some(token)) => Some(token.clone()),
                None => None,
            };
            match page(
                &cursor.caller,
                cursor.kind,
                &cursor.request,
                token.as_deref(),
            )
            .await
            {
                Ok(page) => {
                    cursor.empty = if page.results.is_empty() {
                        cursor.empty + 1
                    } else {
                        0
                    };
                    let looping = page
                        .next_token
                        .as_ref()
                        .is_some_and(|token| !cursor.seen.insert(token.clone()));
                    if looping || (cursor.empty >= MAX_EMPTY_PAGES && page.next_token.is_some()) {
                        let error = Error::Protocol(
                            "the search's pages do not end (a token repeated, or empty pages went on)"
                                .to_owned(),
                        );
                        return Some((Err(error), None));
                    }
                    cursor.held.extend(page.results);
                    cursor.next = Some(page.next_token);
                }
                Err(error) => return Some((Err(error), None)),
            }
        }
    })
}
