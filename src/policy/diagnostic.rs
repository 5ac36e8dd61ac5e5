//! A Cedar diagnostic tied to the file it came from, so a report says
//! `policies/trade.cedar:12:5` and shows the line, not just "policy0".

use std::fmt;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// One of Cedar's diagnostics (parse, schema or validation error), with the
/// named source of the file it points into. Labels, help and code are
/// Cedar's own, forwarded untouched.
pub struct SourceDiagnostic {
    inner: Box<dyn Diagnostic + Send + Sync + 'static>,
    source: NamedSource<String>,
    text: String,
    path: String,
}

impl SourceDiagnostic {
    /// Attaches `path` and its `text` to Cedar's diagnostic.
    pub fn new(
        inner: impl Diagnostic + Send + Sync + 'static,
        path: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        let path = path.into();
        let text = text.into();
        Self {
            inner: Box::new(inner),
            source: NamedSource::new(path.clone(), text.clone()).with_language("cedar"),
            text,
            path,
        }
    }

    /// `file:line:column` of the first label, or the file alone.
    pub fn location(&self) -> String {
        let offset = self
            .inner
            .labels()
            .and_then(|mut labels| labels.next())
            .map(|label| label.offset());
        match offset {
            Some(offset) => {
                let before = self.text.get(..offset).unwrap_or(&self.text);
                let line = before.matches('\n').count() + 1;
                let column = before
                    .rfind('\n')
                    .map_or(before.len(), |nl| before.len() - nl - 1)
                    + 1;
                format!("{}:{line}:{column}", self.path)
            }
            None => self.path.clone(),
        }
    }

    /// One line for logs and JSON: `file:line:col: message: help: …`.
    pub fn one_line(&self) -> String {
        let mut line = format!("{}: {}", self.location(), self.inner);
        if let Some(help) = self.inner.help() {
            line.push_str(": help: ");
            line.push_str(&help.to_string());
        }
        line.replace('\n', " ")
    }
}

impl fmt::Debug for SourceDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

impl fmt::Display for SourceDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.inner)
    }
}

impl std::error::Error for SourceDiagnostic {}

impl Diagnostic for SourceDiagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.code()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.help()
    }
    fn url<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.inner.url()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.inner.labels()
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        self.inner.related()
    }
}
