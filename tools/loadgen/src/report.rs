//! What a run measured, and how it is written: rows of the results table,
//! Mandate's own latency histogram between two reads, and the plot.

use std::path::Path;

use hdrhistogram::Histogram;

/// A latency histogram in µs, 1 µs to 60 s.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// What one run measured.
pub struct Outcome {
    pub name: String,
    /// answered requests (200)
    pub requests: u64,
    /// decisions per request (a batch holds many)
    pub per_request: u64,
    pub errors: u64,
    pub seconds: f64,
    pub latency: Histogram<u64>,
    /// the server's CPU seconds over the run
    pub cpu: f64,
    /// of which in the kernel
    pub system: f64,
}

impl Outcome {
    pub fn decisions(&self) -> u64 {
        self.requests * self.per_request
    }

    pub fn throughput(&self) -> f64 {
        self.decisions() as f64 / self.seconds
    }

    /// Server CPU time per decision, µs.
    pub fn cpu_per_decision(&self) -> f64 {
        if self.decisions() == 0 {
            return 0.0;
        }
        self.cpu * 1e6 / self.decisions() as f64
    }

    /// Of [`Self::cpu_per_decision`], the kernel's part, µs.
    pub fn system_per_decision(&self) -> f64 {
        if self.decisions() == 0 {
            return 0.0;
        }
        self.system * 1e6 / self.decisions() as f64
    }

    pub fn row(&self) -> String {
        let q = |p: f64| self.latency.value_at_quantile(p);
        format!(
            "| {} | {:.0} | {} | {} | {} | {} | {:.1} | {} |",
            self.name,
            self.throughput(),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            self.cpu_per_decision(),
            self.errors
        )
    }
}

/// The head of the table [`Outcome::row`] writes rows of.
pub const TABLE_HEAD: &str = "| run | decisions/s | p50 µs | p90 µs | p99 µs | p99.9 µs | server CPU µs/decision | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|";

/// Server-side latency over one run: Mandate's decision histogram's
/// growth between two reads.
pub struct ServerSide {
    buckets: Vec<(f64, u64)>,
}

impl ServerSide {
    pub fn between(before: &[(f64, u64)], after: &[(f64, u64)]) -> Self {
        let buckets = after
            .iter()
            .map(|&(le, count)| {
                let earlier = before.iter().find(|(b, _)| *b == le).map_or(0, |(_, c)| *c);
                (le, count.saturating_sub(earlier))
            })
            .collect();
        Self { buckets }
    }

    /// The bucket bound the `q` quantile falls under, in µs (`≤ 50`).
    pub fn bound(&self, q: f64) -> String {
        let total = self.buckets.last().map_or(0, |(_, c)| *c);
        if total == 0 {
            return "—".into();
        }
        let wanted = (q * total as f64).ceil() as u64;
        match self.buckets.iter().find(|(_, count)| *count >= wanted) {
            Some((le, _)) if le.is_finite() => format!("≤ {:.0}", le * 1e6),
            _ => {
                let last = self
                    .buckets
                    .iter()
                    .rev()
                    .find(|(le, _)| le.is_finite())
                    .map_or(0.0, |(le, _)| *le);
                format!("> {:.0}", last * 1e6)
            }
        }
    }
}

/// One point of the open-loop sweep: offered rate and client p50, p90,
/// p99, p99.9 in µs.
pub type SweepPoint = (f64, u64, u64, u64, u64);

/// Latency percentiles against offered load, as an SVG.
pub fn plot(path: &Path, sweep: &[SweepPoint]) {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let max_x = sweep.iter().map(|s| s.0).fold(1.0, f64::max) * 1.05;
    let max_y = sweep.iter().map(|s| s.4).max().unwrap_or(1).max(1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Mandate: latency against offered load (brokerage mix, HTTP/1.1, one core)",
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x, (1.0..max_y).log_scale())
        .unwrap();
    chart
        .configure_mesh()
        .x_desc("offered load (decisions/s)")
        .y_desc("latency (µs, log scale)")
        .draw()
        .unwrap();
    type Pick = fn(&SweepPoint) -> u64;
    let series: [(&str, RGBColor, Pick); 4] = [
        ("p50", BLUE, |s| s.1),
        ("p90", GREEN, |s| s.2),
        ("p99", RED, |s| s.3),
        ("p99.9", MAGENTA, |s| s.4),
    ];
    for (label, color, pick) in series {
        chart
            .draw_series(LineSeries::new(
                sweep.iter().map(|s| (s.0, pick(s).max(1) as f64)),
                color.stroke_width(2),
            ))
            .unwrap()
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .unwrap();
    root.present().unwrap();
}
