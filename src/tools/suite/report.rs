//! How `mandate test` reports: text for people, JSON lines for scripts,
//! JUnit XML for CI systems' test reports. Every failing case names its
//! file and line.

use std::io::Write;

use serde_json::json;

use super::CaseResult;

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ok    suite / case`, `FAIL  suite / case (file:line)` and the
    /// difference, then a count
    Text,
    /// one JSON object per case, then `{"passed": n, "failed": m}`
    Json,
    /// JUnit XML, one `<testsuite>` per suite
    Junit,
}

/// Reports cases as they finish (text and JSON stream; JUnit, a document
/// with counts up front, is written at the end).
pub struct Report<W: Write> {
    format: Format,
    out: W,
    held: Vec<CaseResult>,
    passed: usize,
    failed: usize,
}

impl<W: Write> Report<W> {
    /// A report in `format` onto `out`.
    pub fn new(format: Format, out: W) -> Self {
        Self {
            format,
            out,
            held: Vec::new(),
            passed: 0,
            failed: 0,
        }
    }

    /// Reports one case.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn case(&mut self, result: CaseResult) -> std::io::Result<()> {
        if result.failure.is_some() {
            self.failed += 1;
        } else {
            self.passed += 1;
        }
        let at = format!("{}:{}", result.file.display(), result.line);
        match self.format {
            Format::Text => match &result.failure {
                None => writeln!(self.out, "ok    {} / {}", result.suite, result.name),
                Some(diff) => writeln!(
                    self.out,
                    "FAIL  {} / {} ({at})\n{diff}",
                    result.suite, result.name
                ),
            },
            Format::Json => {
                let line = json!({
                    "suite": result.suite,
                    "case": result.name,
                    "rule": result.rule,
                    "file": result.file.display().to_string(),
                    "line": result.line,
                    "outcome": if result.failure.is_some() { "fail" } else { "pass" },
                    "failure": result.failure.as_deref().map(str::trim_end),
                });
                writeln!(self.out, "{line}")
            }
            Format::Junit => {
                self.held.push(result);
                Ok(())
            }
        }
    }

    /// Ends the report; returns (passed, failed).
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn finish(mut self) -> std::io::Result<(usize, usize)> {
        match self.format {
            Format::Text => writeln!(self.out, "{} passed, {} failed", self.passed, self.failed)?,
            Format::Json => writeln!(
                self.out,
                "{}",
                json!({"passed": self.passed, "failed": self.failed})
            )?,
            Format::Junit => self.junit()?,
        }
        self.out.flush()?;
        Ok((self.passed, self.failed))
    }

    fn junit(&mut self) -> std::io::Result<()> {
        let out = &mut self.out;
        writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        writeln!(
            out,
            r#"<testsuites name="mandate test" tests="{}" failures="{}">"#,
            self.passed + self.failed,
            self.failed
        )?;
        let mut rest = self.held.as_slice();
        while let Some(first) = rest.first() {
            let count = rest
                .iter()
                .take_while(|r| r.suite == first.suite && r.file == first.file)
                .count();
            let (suite, tail) = rest.split_at(count);
            rest = tail;
            let failures = suite.iter().filter(|r| r.failure.is_some()).count();
            writeln!(
                out,
                r#"  <testsuite name="{}" file="{}" tests="{}" failures="{failures}">"#,
                escape(&first.suite),
                escape(&first.file.display().to_string()),
                suite.len()
            )?;
            for case in suite {
                let opening = format!(
                    r#"    <testcase name="{}" classname="{}" file="{}" line="{}""#,
                    escape(&case.name),
                    escape(&case.suite),
                    escape(&case.file.display().to_string()),
                    case.line
                );
                match &case.failure {
                    None => writeln!(out, "{opening}/>")?,
                    Some(diff) => {
                        let first_line = diff.lines().next().unwrap_or("").trim();
                        writeln!(out, "{opening}>")?;
                        writeln!(
                            out,
                            r#"      <failure message="{}">{}</failure>"#,
                            escape(first_line),
                            escape(diff.trim_end())
                        )?;
                        writeln!(out, "    </testcase>")?;
                    }
                }
            }
            writeln!(out, "  </testsuite>")?;
        }
        writeln!(out, "</testsuites>")
    }
}

/// Text as XML character data or an attribute value.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::suite::Expect;
    use std::path::PathBuf;

    fn result(name: &str, failure: Option<&str>) -> CaseResult {
        CaseResult {
            suite: "roles <&>".to_owned(),
            name: name.to_owned(),
            file: PathBuf::from("tests/policies/roles.yaml"),
            line: 12,
            rule: Some("S2".to_owned()),
            expect: Expect::Allow,
            failure: failure.map(str::to_owned),
            determined: Vec::new(),
            evaluated: Vec::new(),
        }
    }

    fn report(format: Format) -> String {
        let mut out = Vec::new();
        let mut report = Report::new(format, &mut out);
        report.case(result("passes", None)).unwrap();
        report
            .case(result(
                "fails \"here\"",
                Some("    decision: expected Allow, got Deny\n"),
            ))
            .unwrap();
        assert_eq!(report.finish().unwrap(), (1, 1));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_names_the_file_and_line_of_a_failing_case() {
        let text = report(Format::Text);
        assert!(text.contains("ok    roles <&> / passes\n"), "{text}");
        assert!(
            text.contains("FAIL  roles <&> / fails \"here\" (tests/policies/roles.yaml:12)\n    decision: expected Allow, got Deny"),
            "{text}"
        );
        assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
    }

    #[test]
    fn json_is_one_object_per_case_then_the_counts() {
        let text = report(Format::Json);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["outcome"], "pass");
        assert_eq!(lines[1]["outcome"], "fail");
        assert_eq!(lines[1]["line"], 12);
        assert_eq!(lines[1]["rule"], "S2");
        assert_eq!(
            lines[1]["failure"],
            "    decision: expected Allow, got Deny"
        );
        assert_eq!(lines[2], json!({"passed": 1, "failed": 1}));
    }

    #[test]
    fn junit_counts_up_front_and_escapes_what_xml_needs() {
        let xml = report(Format::Junit);
        assert!(
            xml.contains(r#"<testsuites name="mandate test" tests="2" failures="1">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<testsuite name="roles &lt;&amp;&gt;" file="tests/policies/roles.yaml" tests="2" failures="1">"#), "{xml}");
        assert!(xml.contains(r#"<testcase name="passes" classname="roles &lt;&amp;&gt;" file="tests/policies/roles.yaml" line="12"/>"#), "{xml}");
        assert!(
            xml.contains(r#"<failure message="decision: expected Allow, got Deny">"#),
            "{xml}"
        );
        assert!(xml.contains("fails &quot;here&quot;"), "{xml}");
        assert!(xml.trim_end().ends_with("</testsuites>"));
    }
}
