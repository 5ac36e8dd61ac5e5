//! The path-template compiler of the route table: a route's path pattern
//! (`/accounts/{account}/withdrawals`) and the text templates that name its
//! parameters (`resource_id = "{account}"`), matched and rendered. Knows
//! nothing of trust or of HTTP: the path it matches is already decoded and
//! checked (`trust.rs`).

/// A piece of a pattern or template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment {
    /// text that must be there, or is written as is
    Literal(String),
    /// a path parameter, by name
    Param(String),
}

/// A text template: literal pieces and `{param}` references.
#[derive(Debug, Clone)]
pub(super) struct Template(pub(super) Vec<Segment>);

impl Template {
    /// Whether the template is the operator's word alone (no parameter the
    /// client chooses).
    pub(super) fn is_literal(&self) -> bool {
        self.0
            .iter()
            .all(|piece| matches!(piece, Segment::Literal(_)))
    }
}

/// A route's path as configured (`/literal/{param}/…`) as segments.
///
/// # Errors
/// What is wrong with it, for the route's diagnostic.
pub(super) fn pattern(path: &str) -> Result<Vec<Segment>, String> {
    if !path.starts_with('/') {
        return Err("the path must start with `/`".to_owned());
    }
    let mut pattern = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                pattern.push(Segment::Param(name.to_owned()));
            }
            Some(_) => return Err(format!("bad parameter `{segment}`")),
            None if segment.contains(['{', '}']) => {
                return Err(format!("a parameter must be a whole segment: `{segment}`"));
            }
            None => pattern.push(Segment::Literal(segment.to_owned())),
        }
    }
    Ok(pattern)
}

/// The parameter names of a pattern.
pub(super) fn params(pattern: &[Segment]) -> Vec<&str> {
    pattern
        .iter()
        .filter_map(|segment| match segment {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
        .collect()
}

/// A text template over `params`.
///
/// # Errors
/// An unclosed `{`, or a name that is not one of `params`.
pub(super) fn template(text: &str, params: &[&str]) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let (literal, tail) = rest.split_at(open);
        if !literal.is_empty() {
            pieces.push(Segment::Literal(literal.to_owned()));
        }
        let close = tail
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{text}`"))?;
        let name = tail.get(1..close).unwrap_or_default();
        if !params.contains(&name) {
            return Err(format!("`{{{name}}}` is not a parameter of the path"));
        }
        pieces.push(Segment::Param(name.to_owned()));
        rest = tail.get(close + 1..).unwrap_or_default();
    }
    if !rest.is_empty() {
        pieces.push(Segment::Literal(rest.to_owned()));
    }
    Ok(Template(pieces))
}

/// The parameters of `segments` when they match `pattern`, else `None`.
pub(super) fn match_pattern<'s>(
    pattern: &'s [Segment],
    segments: &'s [String],
) -> Option<Vec<(&'s str, &'s str)>> {
    if pattern.len() != segments.len() {
        return None;
    }
    let mut params = Vec::new();
    for (expected, actual) in pattern.iter().zip(segments) {
        match expected {
            Segment::Literal(literal) if literal == actual => {}
            Segment::Literal(_) => return None,
            Segment::Param(name) => params.push((name.as_str(), actual.as_str())),
        }
    }
    Some(params)
}

/// `template` with each parameter replaced by its value in `params`.
pub(super) fn render(template: &Template, params: &[(&str, &str)]) -> String {
    template
        .0
        .iter()
        .map(|piece| match piece {
            Segment::Literal(text) => text.as_str(),
            Segment::Param(name) => params
                .iter()
                .find(|(n, _)| n == name)
                .map_or("", |(_, v)| v),
        })
        .collect()
}
